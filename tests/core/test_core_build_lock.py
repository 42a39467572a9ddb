"""Two `cafe data build` jobs into one output: the second is refused naming the first, which ends a valid set.

The one slow test of the writer lock: real `cafe` processes, the tiny preset, a local Ray each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from skimage import data

from cafe_core.layout import LOCK_NAME, detect_layout
from cafe_core.lock import read_holder
from cafe_core.status import read_status_tables
from cafe_core.validate import validate_set

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def build_command(photos: Path, output: Path) -> list[str]:
    command = [str(Path(sys.executable).parent / "cafe"), "data", "build", "--input", str(photos)]
    command += ["--output", str(output), "--set", "inputs_per_shard=1"]
    for stage in ("decode", "caption", "ground", "segment", "compose"):  # one row per batch: a slower job
        command += ["--set", f"resources.{stage}.batch_size=1"]
    return command


@pytest.mark.timeout(600)
def test_a_second_build_into_one_output_is_refused_and_the_first_completes(tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    for name in PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        image.thumbnail((160, 160))
        image.save(photos / f"{name}.jpg", quality=90)
    output = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    first = subprocess.Popen(
        build_command(photos, output), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while (holder := read_holder(output)) is None or not holder.held:
            assert first.poll() is None, f"the first build ended early: {first.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the first build never took the output's lock"
            time.sleep(0.05)
        assert (holder.pid, holder.job) == (first.pid, "build-triples")

        second = subprocess.run(build_command(photos, output), env=env, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "refuse the second build while the first is still running"
        assert second.returncode == 2, second.stdout + second.stderr
        message = " ".join(second.stderr.split())  # rich may wrap the line
        assert f"is being written by pid {first.pid}" in message and "build-triples" in message, message
        _, err = first.communicate(timeout=500)
    finally:
        first.kill()
    assert first.returncode == 0, err[-2000:]
    layout = detect_layout(output)
    table = read_status_tables([layout.status_path(n) for n in layout.done_numbers()])
    assert sorted(table.column("input_key").to_pylist()) == sorted(f"{name}.jpg" for name in PHOTOS)
    assert len(layout.done_numbers()) == len(PHOTOS)
    report = validate_set(output)
    assert report.ok, report.problems
    assert not (output / LOCK_NAME).exists()

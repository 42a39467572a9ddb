"""The whole build job on a local Ray with 2 CPUs: bad inputs, reruns, new inputs, a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from inputs import BAD_INPUTS, PHOTOS, REFUSED, photo, write_bad_inputs, write_photos

from cafe_core.index import read_index
from cafe_core.layout import detect_layout
from cafe_core.lookup import key_locations
from cafe_core.status import read_status_tables
from cafe_core.validate import validate_set
from cafe_pipelines.build_config import build_recipe
from cafe_pipelines.build_triples import build_triples

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def status_rows(root: Path) -> dict[str, dict]:
    layout = detect_layout(root)
    table = read_status_tables([layout.status_path(n) for n in layout.done_numbers()])
    return {row["input_key"]: row for row in table.to_pylist()}


def shard_md5s(root: Path) -> dict[str, str]:
    return {e["url"]: e["md5"] for e in read_index(detect_layout(root))["shardlist"]}


@pytest.fixture(scope="module")
def built(local_ray, tmp_path_factory):
    base = tmp_path_factory.mktemp("job")
    write_photos(base / "in")
    write_bad_inputs(base / "in" / "bad", base / "elsewhere")
    (base / "in" / "copy_of_coffee.jpg").write_bytes((base / "in" / "coffee.jpg").read_bytes())
    config = build_recipe("tiny", input=str(base / "in"), output=str(base / "out"), inputs_per_shard=4)
    report = build_triples(config)
    return base, config, report


def test_job_completes_with_every_input_accounted_for(built) -> None:
    base, _, report = built
    rows = status_rows(base / "out")
    expected = {f"{p}.jpg" for p in PHOTOS} | {f"bad/{name}" for name in BAD_INPUTS} | {"copy_of_coffee.jpg"}
    assert set(rows) == expected
    assert report.inputs_listed == report.inputs_processed == len(expected)
    assert report.shards_written == 4  # 16 inputs in partitions of 4
    for name, reason in BAD_INPUTS.items():
        row = rows[f"bad/{name}"]
        if name in REFUSED:
            assert (row["status"], row["reason"]) == ("skipped", reason), row
            assert not row["sample_keys"]
        else:  # repaired; then either written (reason = the repair) or refused by a gate (repair in error)
            assert reason == row["reason"] or reason in row["error"], row
    written = [r for r in rows.values() if r["status"] == "ok"]
    assert written, "no photo became a triple"
    assert report.samples_written == sum(len(r["sample_keys"]) for r in rows.values())
    assert validate_set(base / "out").ok
    assert set(report.stage_images_per_s) == {"decode", "caption", "ground", "segment", "compose"}
    assert (base / "out" / "build-report.json").is_file()


def test_rerun_on_unchanged_input_writes_nothing(built) -> None:
    base, config, _ = built
    before = shard_md5s(base / "out")
    report = build_triples(config)
    assert report.inputs_processed == 0 and report.inputs_already_done == report.inputs_listed
    assert shard_md5s(base / "out") == before


def test_rerun_after_adding_images_processes_only_those(built) -> None:
    base, config, _ = built
    before = shard_md5s(base / "out")
    (base / "in" / "new").mkdir()
    photo("astronaut").rotate(90, expand=True).save(base / "in" / "new" / "astronaut_rotated.jpg")
    photo("coffee").transpose(0).save(base / "in" / "new" / "coffee_mirrored.jpg")
    report = build_triples(config)
    assert report.inputs_processed == 2
    after = shard_md5s(base / "out")
    assert {k: after[k] for k in before} == before  # old shards untouched
    assert len(after) == len(before) + 1
    assert {"new/astronaut_rotated.jpg", "new/coffee_mirrored.jpg"} <= set(status_rows(base / "out"))


def test_duplicate_image_bytes_are_recorded_not_written_twice(built) -> None:
    base, _, _ = built
    rows = status_rows(base / "out")
    if rows["coffee.jpg"]["status"] == "ok":  # the random models may gate the photo away
        assert rows["copy_of_coffee.jpg"]["reason"] == "input.duplicate"
        assert "coffee" not in rows["copy_of_coffee.jpg"]["sample_keys"]


def test_killed_job_rerun_ends_with_the_keys_of_an_uninterrupted_run(local_ray, tmp_path: Path) -> None:
    photos = tmp_path / "in"
    write_photos(photos)
    for name in ("astronaut", "chelsea", "rocket"):
        photo(name).transpose(0).save(photos / f"{name}_mirrored.jpg")
    reference = tmp_path / "reference"
    build_triples(build_recipe("tiny", input=str(photos), output=str(reference), inputs_per_shard=2))
    assert len(list(reference.glob("*.stats.json"))) == 4

    killed = tmp_path / "killed"
    command = [
        str(Path(sys.executable).parent / "cafe"),
        "data",
        "build",
        "--input",
        str(photos),
        "--output",
        str(killed),
        "--set",
        "inputs_per_shard=2",
    ]
    # One row per batch, so shards complete one by one and the kill lands between them.
    for stage in ("decode", "caption", "ground", "segment", "compose"):
        command += ["--set", f"resources.{stage}.batch_size=1"]
    env = dict(os.environ)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    process = subprocess.Popen(command, env=env, start_new_session=True, **quiet)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(killed.glob("*.stats.json")):
        assert process.poll() is None, "the job ended before it could be killed"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and everything it started, mid-run
    process.wait()
    done_at_kill = len(list(killed.glob("*.stats.json")))
    assert 1 <= done_at_kill < 4, "kill the job between its first and last shard"

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    layout = detect_layout(killed)
    assert not layout.temp_files()
    assert set(layout.existing_numbers()) == set(layout.done_numbers())
    keys = key_locations(layout)
    assert sorted(keys) == sorted(key_locations(detect_layout(reference)))
    assert set(status_rows(killed)) == set(status_rows(reference))
    assert shard_md5s(killed) == shard_md5s(reference)  # the same shards, byte for byte
    assert validate_set(killed).ok


@pytest.mark.timeout(300)  # a FIFO opened by the decode stage hangs the build forever: fail instead
def test_a_fifo_and_a_folder_link_out_get_status_rows_and_the_build_ends(local_ray, tmp_path: Path) -> None:
    write_photos(tmp_path / "in", ("coffee",))
    os.mkfifo(tmp_path / "in" / "x.jpg")
    write_photos(tmp_path / "elsewhere", ("rocket",))
    (tmp_path / "in" / "link-out").symlink_to(tmp_path / "elsewhere")
    report = build_triples(build_recipe("tiny", input=str(tmp_path / "in"), output=str(tmp_path / "out")))
    rows = status_rows(tmp_path / "out")
    assert set(rows) == {"coffee.jpg", "x.jpg", "link-out"}
    assert (rows["x.jpg"]["status"], rows["x.jpg"]["reason"]) == ("skipped", "input.not_regular_file")
    assert (rows["link-out"]["status"], rows["link-out"]["reason"]) == ("skipped", "input.outside_root")
    assert report.skipped == {"input.not_regular_file": 1, "input.outside_root": 1}
    assert validate_set(tmp_path / "out").ok


def test_a_relative_brace_pattern_of_tars_builds(local_ray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = write_photos(tmp_path / "imgs", ("coffee", "rocket"))
    (tmp_path / "data").mkdir()
    for number, path in enumerate(photos):
        with tarfile.open(tmp_path / "data" / f"c-{number:05d}.tar", "w") as tar:
            tar.add(path, arcname="000000000.jpg")
    monkeypatch.chdir(tmp_path)  # the README's example: `--input 'data/c-{00000..00099}.tar'`
    report = build_triples(build_recipe("tiny", input="data/c-{00000..00001}.tar", output="out"))
    rows = status_rows(tmp_path / "out")
    assert set(rows) == {"c-00000.tar/000000000", "c-00001.tar/000000000"}
    assert report.inputs_processed == 2 and not report.failed
    assert all(row["source_uri"].startswith(f"file://{tmp_path}/data/") for row in rows.values())

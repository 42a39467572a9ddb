"""A build-data job whose input is a manifest is held to the service's data roots: a photo outside every root
and /etc/passwd, named inside the manifest, get `input.outside_root` status rows, are never read and never
become samples; the command gets the roots as `--input-root` and never `--allow-outside-root`."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from service_helpers import TOKEN, client, service_in_thread, wait_for_state

from cafe_core.layout import detect_layout
from cafe_core.status import read_status_tables
from cafe_service import ServiceSettings


@pytest.fixture(scope="module")
def roots(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The data root, a second root, and outside them a real photo (not the same bytes as any inside)."""
    second = tmp_path_factory.mktemp("second-root")
    outside = tmp_path_factory.mktemp("not-a-root")
    with Image.open(data_root / "photos" / "coffee.jpg") as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(outside / "elsewhere.jpg", quality=90)
    return {"data": data_root, "second": second, "outside": outside}


@pytest.fixture(scope="module")
def service(roots: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, local_ray) -> Iterator[tuple[str, Any]]:
    state = tmp_path_factory.mktemp("service-state")
    settings = ServiceSettings(
        db_path=state / "service.db", token=TOKEN, roots=[roots["data"], roots["second"]], slots=1, poll_s=0.2
    )
    with service_in_thread(settings) as served:
        yield served


@pytest.fixture(scope="module")
def http(service: tuple[str, Any]) -> Iterator[httpx.Client]:
    with client(service[0]) as connection:
        yield connection


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_command_gets_the_roots_and_never_allow_outside_root(http: httpx.Client, roots: dict[str, Path]) -> None:
    body = {"kind": "build-data", "input": "photos", "output": "out/dry", "preset": "tiny"}
    checked = http.post("/jobs", params={"dry_run": "true"}, json=body)
    assert checked.status_code == 200, checked.text
    command = checked.json()["command"]
    pairs = [command[i + 1] for i, arg in enumerate(command) if arg == "--input-root"]
    assert pairs == [str(roots["data"]), str(roots["second"])]
    assert "--allow-outside-root" not in command
    assert "input_roots" not in checked.json()["spec"]  # the roots are the service's, not the spec's


@pytest.mark.parametrize("overrides", [{"allow_outside_root": True}, {"input_roots": ["/"]}, {"input_roots": "/etc"}])
def test_overrides_cannot_widen_the_roots(http: httpx.Client, overrides: dict[str, Any]) -> None:
    body = {"kind": "build-data", "input": "photos", "output": "out/dry", "preset": "tiny", "overrides": overrides}
    response = http.post("/jobs", params={"dry_run": "true"}, json=body)
    assert response.status_code == 422, response.text
    name = next(iter(overrides))
    assert response.json()["field"] == f"overrides.{name}"
    assert "data roots" in response.json()["error"]


@pytest.mark.ray
@pytest.mark.slow
def test_a_manifest_naming_paths_outside_the_roots(http: httpx.Client, roots: dict[str, Path]) -> None:
    data, outside = roots["data"], roots["outside"]
    manifest = write_manifest(
        data / "lists" / "photos.jsonl",
        [
            {"path": str(data / "photos" / "astronaut.jpg"), "id": "inside"},
            {"path": str(outside / "elsewhere.jpg"), "id": "outside-photo"},
            {"path": "/etc/passwd", "id": "passwd"},
        ],
    )
    body = {"kind": "build-data", "input": str(manifest), "output": "out/from-manifest", "preset": "tiny"}
    job = http.post("/jobs", json=body).json()
    assert "--input-root" in job["command"] and "--allow-outside-root" not in job["command"]
    ended = wait_for_state(http, job["id"], ("succeeded", "failed", "cancelled"), timeout_s=600)
    assert ended["state"] == "succeeded", ended

    output = data / "out" / "from-manifest"
    layout = detect_layout(output)
    table = read_status_tables([layout.status_path(n) for n in layout.done_numbers()])
    rows = {row["input_key"]: row for row in table.to_pylist()}
    assert set(rows) == {"inside", "outside-photo", "passwd"}
    for key in ("outside-photo", "passwd"):
        # Never read: read, the photo would be a sample and /etc/passwd `decode.not_an_image`.
        assert (rows[key]["status"], rows[key]["reason"]) == ("skipped", "input.outside_root"), rows[key]
        assert not rows[key]["sample_keys"]
    assert rows["inside"]["reason"] != "input.outside_root"
    for tar_path in output.glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    source = json.loads(tar.extractfile(member).read())["source"]
                    assert source["input_key"] == "inside", source

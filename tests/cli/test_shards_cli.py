"""`cafe shards ...` on real shard sets: outputs, files written, exit codes (0 fine, 1 problems, 2 usage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from factories import make_triple, ok_input
from PIL import Image
from typer.testing import CliRunner

from cafe_cli.main import app
from cafe_core import InputStatus, ShardSet

runner = CliRunner()


def cafe(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    with ShardSet(root).writer(max_samples=4) as writer:
        for i in range(10):
            triple = make_triple(i, scores={"box": i / 10, "mask_iou": 0.9})
            writer.add(ok_input(triple), [triple])
        broken = InputStatus("inputs/broken.jpg", "failed", reason="decode.truncated", error="image file is truncated")
        writer.add(broken)
        writer.add(InputStatus("inputs/tiny.jpg", "skipped", reason="decode.too_small"))
    return root


def test_ls_lists_shards_and_keys(shard_dir: Path) -> None:
    result = cafe("shards", "ls", shard_dir)
    assert result.exit_code == 0, result.output
    for name in ("shard-000000", "shard-000001", "shard-000002"):
        assert name in result.output
    keys = cafe("shards", "ls", shard_dir, "--keys")
    lines = keys.output.split()
    assert keys.exit_code == 0 and len(lines) == 20  # "shard key" pairs for 10 samples
    assert make_triple(3).key in lines


def test_ls_finds_sets_below_a_folder(shard_dir: Path) -> None:
    result = cafe("shards", "ls", shard_dir.parent)
    assert result.exit_code == 0, result.output
    assert "set" in result.output and "10" in result.output


def test_stats_json_counts_and_reasons(shard_dir: Path) -> None:
    result = cafe("shards", "stats", shard_dir, "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["num_samples"] == 10 and stats["num_inputs"] == 12 and stats["num_shards"] == 3
    assert stats["status"] == {"ok": 10, "skipped": 1, "failed": 1}
    assert stats["reasons"] == {"failed": {"decode.truncated": 1}, "skipped": {"decode.too_small": 1}}
    assert stats["scores"]["box"]["min"] == 0.0 and stats["scores"]["box"]["max"] == pytest.approx(0.9)
    assert stats["index"] == "ok"


def test_stats_table_names_reasons(shard_dir: Path) -> None:
    result = cafe("shards", "stats", shard_dir)
    assert result.exit_code == 0, result.output
    assert "decode.truncated" in result.output and "mask_iou" in result.output


def test_show_prints_metadata_and_writes_png(shard_dir: Path, tmp_path: Path) -> None:
    triple = make_triple(2)
    out = tmp_path / "one.png"
    result = cafe("shards", "show", shard_dir, triple.key, "--out", out)
    assert result.exit_code == 0, result.output
    assert triple.metadata["source"]["input_key"] in result.output
    with Image.open(out) as image:
        # reference | mask | target side by side: wider than the target alone, the prompt below.
        assert image.width > triple.target.width * 2 and image.height > 256


def test_show_unknown_key_is_a_usage_error(shard_dir: Path) -> None:
    result = cafe("shards", "show", shard_dir, "0123456789abcdef")
    assert result.exit_code == 2
    assert "0123456789abcdef" in result.output


def test_validate_exit_codes(shard_dir: Path) -> None:
    good = cafe("shards", "validate", shard_dir)
    assert good.exit_code == 0, good.output
    assert "valid" in good.output
    assert cafe("shards", "validate", shard_dir, "--fast").exit_code == 0
    tar = shard_dir / "shard-000001.tar"
    data = bytearray(tar.read_bytes())
    tar.write_bytes(bytes(data[: len(data) // 2]))  # truncate one shard
    bad = cafe("shards", "validate", shard_dir, "--json")
    assert bad.exit_code == 1
    report = json.loads(bad.output)
    codes = {p["code"] for p in report["problems"]}
    assert "tar.corrupt" in codes and "index.filesize" in codes
    assert cafe("shards", "validate", shard_dir, "--fast").exit_code == 1


def test_grid_writes_contact_sheet(shard_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    result = cafe("shards", "grid", shard_dir, "-n", 6, "--columns", 3, "--out", out)
    assert result.exit_code == 0, result.output
    assert "6 triples" in result.output
    with Image.open(out) as image:
        assert image.width > 3 * 2 * 64  # three panels across, each wider than two tiles


def test_index_rebuilds_a_lost_index(shard_dir: Path) -> None:
    original = json.loads((shard_dir / "shardindex.json").read_text())
    (shard_dir / "shardindex.json").unlink()
    assert cafe("shards", "validate", shard_dir).exit_code == 1  # the missing index is a problem
    result = cafe("shards", "index", shard_dir)
    assert result.exit_code == 0, result.output
    assert json.loads((shard_dir / "shardindex.json").read_text())["shardlist"] == original["shardlist"]
    assert cafe("shards", "validate", shard_dir).exit_code == 0


def test_index_of_a_corrupt_shard_exits_1(shard_dir: Path) -> None:
    tar = shard_dir / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[:1500])
    result = cafe("shards", "index", shard_dir)
    assert result.exit_code == 1
    assert "validate" in result.output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert cafe("shards", "stats", tmp_path / "missing").exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cafe("shards", "stats", empty)
    assert result.exit_code == 2 and "no shards" in result.output
    assert cafe("shards", "grid", empty, "-n", 0).exit_code == 2
    assert cafe("shards", "frobnicate").exit_code == 2


def test_installed_entry_point_runs(shard_dir: Path) -> None:
    """The `cafe` script itself (not the in-process runner): exit codes reach the shell."""
    cafe_bin = Path(sys.executable).parent / "cafe"
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([cafe_bin, "shards", "stats", shard_dir], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "shard" in done.stdout
    bad = subprocess.run([cafe_bin, "shards", "stats", "/no/such/dir"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2


def test_validate_reports_a_temporary_flags_file_with_its_path(shard_dir: Path) -> None:
    from cafe_core.flags import FLAGS_NAME, add_flag

    add_flag(shard_dir, make_triple(0).key, "bad mask")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    temp = shard_dir / f".{FLAGS_NAME}.{int(dead.stdout)}.abcd1234.tmp"  # a flag write killed before its rename
    temp.write_bytes(b"PAR1 torn")
    table = cafe("shards", "validate", shard_dir)
    assert table.exit_code == 1, table.output
    assert "set.temporary" in table.output and "INVALID" in table.output
    listed = cafe("shards", "validate", shard_dir, "--json")
    assert listed.exit_code == 1
    problems = json.loads(listed.output)["problems"]
    assert [(p["code"], p["shard"]) for p in problems] == [("set.temporary", temp.name)]
    assert str(temp) in problems[0]["message"]

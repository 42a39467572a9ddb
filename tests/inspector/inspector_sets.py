"""Tiny real shard sets for the shard browser's tests, and a fingerprint of their files.

Imported as `inspector_sets` (pytest puts this folder on sys.path for the tests in it).

    served/
      real/              round 0: 10 samples in 3 shards, 2 subjects, box scores 0.0 .. 0.9,
                         3 ok inputs repaired (decode.exif_transposed), 2 skipped, 1 failed
      rounds/round-1/    round 1: 5 generated samples with quality.clip_t, subject "green dog"
      big/               2 samples of 640x480, for thumbnail sizes
    outside/             a set outside the served folder, for the escape tests
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from factories import make_triple

from cafe_core import InputStatus, ShardSet, Triple

TOKEN = "test-token-0123456789"
REAL_SAMPLES = 10
ROUND1_SAMPLES = 5
REPAIRED = {1, 4, 7}  # inputs whose ok row carries a repair reason
REPAIR_REASON = "decode.exif_transposed"


def triple(index: int, subject: str, box: float, round_: int = 0, clip_t: float | None = None) -> Triple:
    base = make_triple(index, round_=round_, scores={"box": box, "mask_iou": 0.9})
    metadata = dict(base.metadata, subject=subject)
    if clip_t is not None:
        metadata["quality"] = {"clip_t": clip_t}
    return dataclasses.replace(base, metadata=metadata, prompt=f"a photo of {subject} on a noisy table")


def real_triples() -> list[Triple]:
    return [triple(i, "red cube" if i % 2 else "blue mug", i / 10) for i in range(REAL_SAMPLES)]


def round1_triples() -> list[Triple]:
    return [triple(100 + i, "green dog", 0.5 + i / 10, round_=1, clip_t=0.2 + i / 100) for i in range(ROUND1_SAMPLES)]


def write_real(root: Path) -> Path:
    with ShardSet(root).writer(max_samples=4, fsync=False) as writer:
        for i, t in enumerate(real_triples()):
            input_key = t.metadata["source"]["input_key"]
            reason = REPAIR_REASON if i in REPAIRED else ""
            writer.add(InputStatus.ok(input_key, reason=reason), [t])
            if i == 2:
                writer.add(InputStatus("inputs/broken.jpg", "skipped", reason="decode.truncated", error="truncated"))
            if i == 5:
                writer.add(InputStatus("inputs/small.jpg", "skipped", reason="gate.mask_area"))
        writer.add(InputStatus("inputs/boom.jpg", "failed", reason="error.segment", error="RuntimeError: boom"))
    return root


def write_round1(root: Path) -> Path:
    with ShardSet(root).writer(max_samples=3, fsync=False) as writer:
        for t in round1_triples():
            writer.add(InputStatus.ok(t.metadata["source"]["input_key"]), [t])
    return root


def write_big(root: Path) -> Path:
    with ShardSet(root).writer(fsync=False) as writer:
        for i in range(2):
            t = make_triple(200 + i, size=(640, 480))
            writer.add(InputStatus.ok(t.metadata["source"]["input_key"]), [t])
    return root


def build_tree(base: Path) -> Path:
    """The served folder described above; returns it."""
    served = base / "served"
    write_real(served / "real")
    write_round1(served / "rounds" / "round-1")
    write_big(served / "big")
    write_real(base / "outside" / "secret")
    return served


def fingerprint(folder: Path) -> dict[str, tuple[str, int, int]]:
    """md5, size and mtime of every file under `folder` except flags: what read-only must keep."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.startswith("flags.parquet"):
            stat = path.stat()
            md5 = hashlib.md5(path.read_bytes()).hexdigest()
            found[str(path.relative_to(folder))] = (md5, stat.st_size, stat.st_mtime_ns)
    return found

"""File names of a shard set, and what state each shard is in.

{prefix}-{n:06d}.tar             samples (written as a hidden temporary, then renamed)
{prefix}-{n:06d}.status.parquet  one row per input
{prefix}-{n:06d}.stats.json      counts, md5, per-sample keys and scores; written last = done
shardindex.json                  wids index, written when the set is closed
dataset.json                     totals and lineage, written when the set is closed
flags.parquet                    samples flagged as bad, beside the set (cafe_core.flags)
.writer.lock                     held by the one writer of the set while it writes (cafe_core.lock)
.flags.lock                      held for each flag write
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_NAME = "shardindex.json"
DATASET_NAME = "dataset.json"
FLAGS_NAME = "flags.parquet"
# Hidden, like the temporaries: the one writer of a set or run holds it (cafe_core.lock); flag writes
# take their own, so flagging a set never waits for, or blocks, a job writing it.
LOCK_NAME = ".writer.lock"
FLAGS_LOCK_NAME = ".flags.lock"
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$")
_SHARD_FILE = re.compile(r"^(?P<prefix>.+)-(?P<num>\d{6,})\.(?P<kind>tar|status\.parquet|stats\.json)$")
# Temporary files are hidden (leading dot) so no glob for `*.tar` ever picks one up.
_TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.\d+\.tmp$")
# Flag temporaries: `.flags.parquet.{pid}.{random}.tmp` (older versions wrote `.flags.parquet.{random}.tmp`).
_FLAGS_TEMP_FILE = re.compile(r"^\.flags\.parquet\.(?:(?P<pid>\d+)\.)?[^.]+\.tmp$")
_ANY_TEMP_FILE = re.compile(r"^\..+\.tmp$")


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not PREFIX_PATTERN.match(prefix):
        raise ValueError(f"prefix: {prefix!r} must be letters, digits, '_' and inner '-' (e.g. 'shard', 'round-1')")
    return prefix


@dataclass(frozen=True)
class SetLayout:
    """The names inside one shard-set folder; touches the disk only in the listing methods."""

    root: Path
    prefix: str = "shard"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        check_prefix(self.prefix)

    def shard_name(self, number: int) -> str:
        return f"{self.prefix}-{number:06d}"

    def tar_path(self, number: int) -> Path:
        return self.root / f"{self.shard_name(number)}.tar"

    def status_path(self, number: int) -> Path:
        return self.root / f"{self.shard_name(number)}.status.parquet"

    def stats_path(self, number: int) -> Path:
        return self.root / f"{self.shard_name(number)}.stats.json"

    def shard_paths(self, number: int) -> tuple[Path, Path, Path]:
        return self.tar_path(number), self.status_path(number), self.stats_path(number)

    def temp_path(self, final: Path, pid: int) -> Path:
        return final.with_name(f".{final.name}.{pid}.tmp")

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    @property
    def dataset_path(self) -> Path:
        return self.root / DATASET_NAME

    def _numbers(self, kind: str) -> list[int]:
        if not self.root.is_dir():
            return []
        numbers = set()
        for path in self.root.iterdir():
            match = _SHARD_FILE.match(path.name)
            if match and match["prefix"] == self.prefix and match["kind"] == kind:
                numbers.add(int(match["num"]))
        return sorted(numbers)

    def existing_numbers(self) -> list[int]:
        """Numbers with any final-named file of this prefix (done or not)."""
        return sorted({n for kind in ("tar", "status.parquet", "stats.json") for n in self._numbers(kind)})

    def done_numbers(self) -> list[int]:
        """Numbers whose stats.json exists: the shard and its status table are complete."""
        return self._numbers("stats.json")

    def temp_files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        ours = (INDEX_NAME, DATASET_NAME)
        return sorted(
            p
            for p in self.root.iterdir()
            if (m := _TEMP_FILE.match(p.name)) and (m["name"].startswith(f"{self.prefix}-") or m["name"] in ours)
        )

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_NAME

    def flags_temp_files(self) -> list[tuple[Path, int | None]]:
        """Temporaries of flag writes, with the pid in each name (None in the old names without one)."""
        if not self.root.is_dir():
            return []
        found = [(p, m["pid"]) for p in self.root.iterdir() if (m := _FLAGS_TEMP_FILE.match(p.name))]
        return sorted((p, int(pid) if pid else None) for p, pid in found)

    def stray_temp_files(self) -> list[Path]:
        """Every other hidden `*.tmp` in the folder: temporaries of another prefix or another tool."""
        if not self.root.is_dir():
            return []
        known = set(self.temp_files()) | {p for p, _ in self.flags_temp_files()}
        return sorted(p for p in self.root.iterdir() if _ANY_TEMP_FILE.match(p.name) and p not in known)

    @staticmethod
    def temp_pid(path: Path) -> int | None:
        """The pid in a temporary's name (`.NAME.PID.tmp`), None when it has none."""
        match = _TEMP_FILE.match(path.name)
        return int(path.name.rsplit(".", 2)[1]) if match else None

    def read_stats(self, number: int) -> dict[str, Any]:
        return json.loads(self.stats_path(number).read_text())


def find_prefixes(root: Path) -> list[str]:
    """The shard prefixes present in a folder (usually one)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted({m["prefix"] for p in root.iterdir() if (m := _SHARD_FILE.match(p.name)) and m["kind"] == "tar"})


def detect_layout(root: Path) -> SetLayout:
    """The layout of the set in `root`, its prefix read from dataset.json or the file names."""
    root = Path(root)
    dataset = root / DATASET_NAME
    if dataset.is_file():
        prefix = json.loads(dataset.read_text()).get("prefix")
        if prefix:
            return SetLayout(root, prefix)
    prefixes = find_prefixes(root)
    if len(prefixes) > 1:
        raise ValueError(f"{root}: holds shards of several prefixes ({', '.join(prefixes)}); keep one set per folder")
    if not prefixes:
        raise FileNotFoundError(f"{root}: no shards here (expected files like shard-000000.tar)")
    return SetLayout(root, prefixes[0])


def atomic_write(path: Path, data: bytes, temp: Path, fsync: bool = True) -> None:
    """Write `data` to `temp`, flush it to disk, then rename it to `path`: readers see all or nothing."""
    with open(temp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    temp.replace(path)

"""What a self-improvement round reads from its input sets: the references it picks, and every target's hash.

    inputs = read_round_inputs(["out/triples"], num_references=100, seed=0)
    inputs.references        # the picked references, in key order, with where their bytes lie
    inputs.target_sha256     # sha256 of every input target's encoded bytes (exact-duplicate check)
    inputs.round             # the highest round among the inputs: the round writes round + 1

Only closed sets are read (a set still being written would make the pick depend on timing), and
only read: the tars' headers, every target's bytes (for its hash) and the picked samples' json.
A reference's cut-out and its source target stay in the tar; stages read them by offset.
References are picked by a seeded hash of their keys, so adding samples to an input leaves the
others' chances alone, and flagged samples (cafe_core.flagged_keys) are never picked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cafe_core import flagged_keys
from cafe_core.layout import detect_layout
from cafe_core.reader import resolve_shards, split_member_name
from cafe_core.tario import iter_tar_entries
from cafe_core.triple import METADATA, REFERENCE, TARGET


@dataclass(frozen=True)
class MemberLocation:
    """`size` bytes at `offset` of the tar at `path`: one member, read without the rest."""

    path: str
    offset: int
    size: int


@dataclass(frozen=True)
class InputReference:
    """One picked reference: its sample in an input set and what the round needs of it."""

    set_path: str
    key: str
    subject: str
    caption: str
    round: int
    reference: MemberLocation
    source_target: MemberLocation
    source_sha256: str  # of the source target's encoded bytes


@dataclass
class RoundInputs:
    references: list[InputReference]
    target_sha256: dict[str, str]  # sha256 -> "set:key" of every input target
    round: int
    sets: list[dict[str, Any]] = field(default_factory=list)  # per input set: path, prefix, samples, rounds
    num_candidates: int = 0  # unflagged unique keys the pick drew from


def pick_rank(seed: int, key: str) -> str:
    """The pick order: references with the smallest ranks are picked first."""
    return hashlib.sha256(f"pick\x00{seed}\x00{key}".encode()).hexdigest()


def _closed_layout(set_dir: str):
    root = Path(set_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--shards {set_dir}: no such folder")
    layout = detect_layout(root)
    if not layout.dataset_path.is_file():
        raise ValueError(
            f"--shards {set_dir}: not a closed shard set (no dataset.json); finish it first "
            "(e.g. `cafe data build --mode incremental` on it) so the round reads a set that no longer changes"
        )
    return layout


def read_round_inputs(set_dirs: Sequence[str], *, num_references: int | None, seed: int) -> RoundInputs:
    """Read the input sets; pick up to `num_references` references (None: all). Sets earlier in the list
    win a key found in several."""
    layouts = [_closed_layout(d) for d in set_dirs]
    owner: dict[str, int] = {}
    flagged: set[str] = set()
    rounds: list[int] = []
    sets: list[dict[str, Any]] = []
    for index, layout in enumerate(layouts):
        dataset = json.loads(layout.dataset_path.read_text())
        set_rounds = [int(r) for r in dataset.get("rounds", {})]
        rounds += set_rounds
        flags = flagged_keys(layout.root)
        flagged |= flags
        num_samples = 0
        for number in layout.done_numbers():
            for key in layout.read_stats(number)["samples"]["key"]:
                num_samples += 1
                owner.setdefault(key, index)
        sets.append(
            {
                "path": str(layout.root.resolve()),
                "prefix": layout.prefix,
                "num_samples": num_samples,
                "num_flagged": len(flags),
                "rounds": dataset.get("rounds", {}),
            }
        )
    usable = sorted(k for k in owner if k not in flagged)
    ranked = sorted(usable, key=lambda k: pick_rank(seed, k))
    picked = set(ranked if num_references is None else ranked[:num_references])

    target_sha256: dict[str, str] = {}
    found: dict[str, dict[str, Any]] = {}
    for index, layout in enumerate(layouts):
        for tar_path in resolve_shards(layout.root):
            with open(tar_path, "rb") as f:
                entries = list(iter_tar_entries(f))
                for name, offset, size in entries:
                    key, suffix = split_member_name(name)
                    mine = key in picked and owner.get(key) == index
                    if suffix == TARGET:
                        f.seek(offset)
                        digest = hashlib.sha256(f.read(size)).hexdigest()
                        target_sha256.setdefault(digest, f"{layout.root}:{key}")
                        if mine:
                            found.setdefault(key, {})["target"] = (MemberLocation(str(tar_path), offset, size), digest)
                    elif mine and suffix == REFERENCE:
                        found.setdefault(key, {})["reference"] = MemberLocation(str(tar_path), offset, size)
                    elif mine and suffix == METADATA:
                        f.seek(offset)
                        found.setdefault(key, {})["json"] = json.loads(f.read(size))
    references = []
    for key in sorted(picked):
        parts = found.get(key, {})
        if not {"target", "reference", "json"} <= parts.keys():
            where = layouts[owner[key]].root
            raise ValueError(f"{where}: sample {key} is incomplete; run `cafe shards validate {where}`")
        meta = parts["json"]
        location, digest = parts["target"]
        references.append(
            InputReference(
                set_path=str(layouts[owner[key]].root.resolve()),
                key=key,
                subject=str(meta["subject"]),
                caption=str(meta.get("caption", "")),
                round=int(meta.get("round", 0)),
                reference=parts["reference"],
                source_target=location,
                source_sha256=digest,
            )
        )
    return RoundInputs(
        references=references,
        target_sha256=target_sha256,
        round=max(rounds, default=0),
        sets=sets,
        num_candidates=len(usable),
    )

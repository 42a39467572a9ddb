"""Helpers for the training tests: tiny real shard sets (one with a corrupt sample), a small fast TrainConfig,
a TensorBoard event reader."""

from __future__ import annotations

import struct
from pathlib import Path

from factories import make_triple, ok_input
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c

from cafe_core import ShardSet
from cafe_core.index import build_index, write_index
from cafe_core.layout import detect_layout
from cafe_core.tario import iter_tar_entries
from cafe_train import TrainConfig


def write_shard_set(root: Path, indices: range, *, max_samples: int = 2) -> Path:
    """A closed set of `make_triple(i)` for i in `indices`, `max_samples` per shard."""
    with ShardSet(root).writer(mode="overwrite", fsync=False, max_samples=max_samples) as writer:
        for index in indices:
            triple = make_triple(index)
            writer.add(ok_input(triple), [triple])
    return root


def corrupt_member(root: Path, shard: str, key: str, member: str = "target.jpg") -> None:
    """Overwrite `KEY.member` in `root/shard` with garbage of the same length, then re-index the set from its
    files: the tar still parses and fast validation passes, but that sample no longer decodes (a sample that
    went bad before its set was indexed)."""
    tar = root / shard
    with open(tar, "r+b") as stream:
        entries = {name: (offset, size) for name, offset, size in iter_tar_entries(stream)}
        offset, size = entries[f"{key}.{member}"]
        stream.seek(offset)
        stream.write(b"\xff" * size)
    layout = detect_layout(root)
    write_index(layout, build_index(layout, from_files=True), pid=0, fsync=False)


def tiny_config(shards: Path, run_dir: Path, model_cache: Path, **overrides) -> TrainConfig:
    """The tiny preset at 32 px, batches of 2, no loader workers: a step takes well under a second."""
    options = {
        "resolution_px": 32,
        "batch_size": 2,
        "num_workers": 0,
        "shuffle_buffer": 4,
        "lr": 1e-3,
        "checkpoint_every": 5,
        "keep_checkpoints": 2,
        "model_cache_dir": model_cache,
        **overrides,
    }
    return TrainConfig(shards=[shards], output_dir=run_dir, preset="tiny", **options)


def read_events(logdir: Path) -> list[Event]:
    """Every event in the `events.out.tfevents.*` files of `logdir`, oldest file first.

    tensorboardX writes and does not read, and tensorboard is not installed: the files are TFRecords
    (u64 length, masked crc32c of it, the serialized Event, masked crc32c of that), read here by hand.
    """
    events: list[Event] = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            header = data[offset : offset + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[offset + 8 : offset + 12])
            body = data[offset + 12 : offset + 12 + length]
            (body_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
            assert header_crc == masked_crc32c(header) and body_crc == masked_crc32c(body), f"{path}: bad crc"
            events.append(Event.FromString(body))
            offset += 16 + length
    return events


def scalars_by_tag(events: list[Event]) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of the scalar summaries among `events`."""
    found: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found

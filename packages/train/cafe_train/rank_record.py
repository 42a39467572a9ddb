"""Per-rank records of a data-parallel run: what each rank read and where its weights ended up.

    CAFE_TRAIN_RECORD_RANKS=1 accelerate launch --num_processes 2 --multi_gpu -m cafe_train.worker RUN/train-config.json

With the switch on, every rank of `train` writes `RUN/ranks/rank-{r}.json` when it returns:

    rank, world_size      this process's place
    first_step, last_step the steps this call of `train` ran
    keys                  the sample keys of every batch it trained on, in order
    trainable_sha256      one checksum over its trainable tensors (names sorted, bytes as stored)
    tensors_sha256        name -> checksum of each trainable tensor

Two ranks with equal `trainable_sha256` hold bit-identical trainable weights (DDP kept them in step);
disjoint `keys` show the loader dealt each rank its own samples. It is a debugging switch (the key
list grows with the run), so it lives in the environment, where every launcher passes it through,
rather than in the recorded TrainConfig.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

RECORD_RANKS_ENV_VAR = "CAFE_TRAIN_RECORD_RANKS"
RANKS_DIR = "ranks"


def record_ranks_enabled() -> bool:
    """True when `$CAFE_TRAIN_RECORD_RANKS` is set to anything but empty, 0, false or no."""
    return os.environ.get(RECORD_RANKS_ENV_VAR, "").strip().lower() not in ("", "0", "false", "no")


def rank_record_path(run_dir: str | Path, rank: int) -> Path:
    return Path(run_dir) / RANKS_DIR / f"rank-{rank}.json"


def tensor_sha256(tensor: torch.Tensor) -> str:
    """The checksum of a tensor's dtype, shape and bytes (on CPU, contiguous)."""
    data = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{data.dtype}:{tuple(data.shape)}:".encode())
    # Through uint8 so bfloat16 (which numpy lacks) hashes like any other dtype.
    digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class RankRecorder:
    """Collects one rank's keys during `train` and writes its record at the end; a no-op when disabled."""

    def __init__(self, run_dir: str | Path, rank: int, world_size: int, *, enabled: bool) -> None:
        self.path = rank_record_path(run_dir, rank)
        self.rank = rank
        self.world_size = world_size
        self.enabled = enabled
        self.keys: list[str] = []

    @classmethod
    def from_env(cls, run_dir: str | Path, rank: int, world_size: int) -> RankRecorder:
        """Enabled by `$CAFE_TRAIN_RECORD_RANKS` (see the module doc)."""
        return cls(run_dir, rank, world_size, enabled=record_ranks_enabled())

    def saw(self, keys: Iterable[str]) -> None:
        """Note the keys of one batch this rank trains on."""
        if self.enabled:
            self.keys.extend(keys)

    def write(self, first_step: int, last_step: int, trainable: Mapping[str, torch.Tensor]) -> Path | None:
        """Write the record (replacing one from an earlier call); returns its path, or None when disabled."""
        if not self.enabled:
            return None
        tensors = {name: tensor_sha256(trainable[name]) for name in sorted(trainable)}
        overall = hashlib.sha256("".join(f"{name}={digest};" for name, digest in tensors.items()).encode())
        record = {
            "rank": self.rank,
            "world_size": self.world_size,
            "first_step": first_step,
            "last_step": last_step,
            "keys": self.keys,
            "trainable_sha256": overall.hexdigest(),
            "tensors_sha256": tensors,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record, indent=1))
        temporary.replace(self.path)  # readers never see half a record
        return self.path


def read_rank_records(run_dir: str | Path) -> list[dict]:
    """Every `RUN/ranks/rank-*.json`, by rank."""
    root = Path(run_dir) / RANKS_DIR
    records = [json.loads(p.read_text()) for p in root.glob("rank-*.json")] if root.is_dir() else []
    return sorted(records, key=lambda record: record["rank"])

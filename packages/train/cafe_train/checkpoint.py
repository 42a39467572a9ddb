"""Checkpoints of a run: every N steps, the last K kept, resumable bit for bit on CPU.

    RUN/checkpoints/step-000010/
        trainable.safetensors   the trainable tensors only (projector + reference k/v), by parameter name
        optimizer.pt            AdamW state
        scheduler.pt            learning-rate schedule state
        grad_scaler.pt          fp16 runs only: the loss scaler's state
        state.pt                step, data position (epoch, batches done in it), RNG states (python, numpy,
                                torch, the loop's noise generator)
        config.json             the config the run was started with (for people; resume does not read it)

A checkpoint is written into a hidden temporary folder and renamed into place, so a folder named
`step-*` is always complete; `latest_checkpoint` ignores anything else.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS_DIR = "checkpoints"
TRAINABLE_NAME = "trainable.safetensors"
STEP_PATTERN = re.compile(r"^step-(\d{6,})$")


@dataclass
class TrainingState:
    """Everything besides tensors that a resume needs."""

    step: int
    epoch: int
    batches_done: int
    noise_generator_state: torch.Tensor
    python_rng: Any = None
    numpy_rng: Any = None
    torch_rng: torch.Tensor | None = None


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of the run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(
    run_dir: str | Path,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainingState,
    config: dict[str, Any] | None = None,
    keep: int = 3,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write `step-{state.step:06d}` atomically, then delete all but the newest `keep` checkpoints."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step:06d}"
    temp = root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    # Cloned and contiguous: `trainable_state_dict` shares memory with the live parameters.
    save_file({name: t.detach().to("cpu").clone().contiguous() for name, t in trainable.items()}, temp / TRAINABLE_NAME)
    torch.save(optimizer.state_dict(), temp / "optimizer.pt")
    torch.save(scheduler.state_dict(), temp / "scheduler.pt")
    if grad_scaler is not None:  # fp16 only: the loss scale is part of the optimizer's state
        torch.save(grad_scaler.state_dict(), temp / "grad_scaler.pt")
    state.python_rng = random.getstate()
    state.numpy_rng = np.random.get_state()
    state.torch_rng = torch.get_rng_state()
    torch.save(asdict(state), temp / "state.pt")
    (temp / "config.json").write_text(json.dumps(config or {}, indent=1, sort_keys=True, default=str))
    if final.exists():  # a rerun of the same step: replace it
        shutil.rmtree(final)
    temp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> tuple[dict[str, torch.Tensor], TrainingState]:
    """Load optimizer and scheduler state in place and restore the global RNGs; returns the trainable
    tensors (for `model.load_trainable_state_dict`) and the training state."""
    path = Path(path)
    missing = [n for n in (TRAINABLE_NAME, "optimizer.pt", "scheduler.pt", "state.pt") if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {path}: missing {', '.join(missing)}")
    trainable = load_file(path / TRAINABLE_NAME)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    if grad_scaler is not None and (path / "grad_scaler.pt").is_file():
        grad_scaler.load_state_dict(torch.load(path / "grad_scaler.pt", weights_only=True))
    state = TrainingState(**torch.load(path / "state.pt", weights_only=False))
    random.setstate(state.python_rng)
    np.random.set_state(state.numpy_rng)
    torch.set_rng_state(state.torch_rng)
    return trainable, state

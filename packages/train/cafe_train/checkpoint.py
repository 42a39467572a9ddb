"""Checkpoints of a run: every N steps, the last K kept, resumable bit for bit on CPU.

    RUN/checkpoints/step-000010/
        trainable.safetensors   the trainable tensors only (projector + reference k/v), by parameter name
        ema.safetensors         runs with ema_decay only: the EMA of the same tensors, same names
        optimizer.pt            AdamW state
        scheduler.pt            learning-rate schedule state
        grad_scaler.pt          fp16 runs only: the loss scaler's state
        state.pt                step, data position (epoch, batches done in it), RNG states (python, numpy,
                                torch, the loop's noise generator)
        config.json             the config the run was started with (for people; resume does not read it)

Which weights to sample with: the EMA when the checkpoint has one, else the trainable tensors;
`inference_weights(path)` picks them, for `model.load_trainable_state_dict`. (The trainable tensors
are what the optimizer state belongs to: a resume continues from them and restores the EMA beside them.)

A checkpoint is written into a hidden temporary folder (`.step-NNNNNN.PID.tmp`) and renamed into
place, so a folder named `step-*` is always complete; `latest_checkpoint` ignores anything else.
Each save first removes the temporaries of saves that were killed: those whose pid runs no more
on this host, or that are older than the run's lock (`stale_before`; only the lock's holder saves).
"""

from __future__ import annotations

import json
import logging
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

from cafe_core.lock import pid_alive

# The layout's names live with the code that reads checkpoints for generation (cafe_model sits below).
from cafe_model.trained import CHECKPOINTS_DIR, EMA_NAME, STEP_PATTERN, TRAINABLE_NAME

log = logging.getLogger(__name__)

# `.step-NNNNNN.PID.tmp` (a save) and `.step-NNNNNN.restore-PID.tmp` (launch_ray restoring Ray's copy).
_TEMP_PATTERN = re.compile(r"^\.step-\d+\.(?:restore-)?(?P<pid>\d+)\.tmp$")


@dataclass
class TrainingState:
    """Everything besides tensors that a resume needs. `rank_rngs[r]` is rank r's `capture_rngs(...)`:
    every rank draws its own noise, so each keeps its own stream across a resume."""

    step: int
    epoch: int
    batches_done: int
    rank_rngs: list[dict[str, Any]]


def capture_rngs(noise_generator: torch.Generator) -> dict[str, Any]:
    """This process's RNG states: python, numpy, torch's global one and the loop's noise generator."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "noise": noise_generator.get_state(),
    }


def restore_rngs(state: TrainingState, rank: int, world_size: int, noise_generator: torch.Generator) -> bool:
    """Restore rank `rank`'s RNG states; True when the resume is exact. A run resumed with another
    number of processes than it was saved with gets rank 0's global states and a noise stream reseeded
    from the step and rank (distinct per rank, equally valid, not the uninterrupted run's)."""
    exact = len(state.rank_rngs) == world_size
    saved = state.rank_rngs[rank if exact else 0]
    random.setstate(saved["python"])
    np.random.set_state(saved["numpy"])
    torch.set_rng_state(saved["torch"])
    if exact:
        noise_generator.set_state(saved["noise"])
    else:
        noise_generator.manual_seed(int(noise_generator.initial_seed()) + 7919 * state.step + rank)
    return exact


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
    ema: dict[str, torch.Tensor] | None = None,
    stale_before: float | None = None,
) -> Path:
    """Write `step-{state.step:06d}` atomically, then delete all but the newest `keep` checkpoints.

    `ema`: the EMA of the trainable tensors (`ParameterEMA.state_dict()`), written as ema.safetensors.
    `stale_before`: when the caller took the run's lock (`time.time()`); temporaries older are dead."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root, stale_before)
    final = root / f"step-{state.step:06d}"
    temp = root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    save_file(_to_cpu(trainable), temp / TRAINABLE_NAME)
    if ema is not None:
        save_file(_to_cpu(ema), temp / EMA_NAME)
    torch.save(optimizer.state_dict(), temp / "optimizer.pt")
    torch.save(scheduler.state_dict(), temp / "scheduler.pt")
    if grad_scaler is not None:  # fp16 only: the loss scale is part of the optimizer's state
        torch.save(grad_scaler.state_dict(), temp / "grad_scaler.pt")
    torch.save(asdict(state), temp / "state.pt")
    (temp / "config.json").write_text(json.dumps(config or {}, indent=1, sort_keys=True, default=str))
    if final.exists():  # a rerun of the same step: replace it
        shutil.rmtree(final)
    temp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temps(root: Path, stale_before: float | None = None) -> list[Path]:
    """Remove the temporary folders under `root` (RUN/checkpoints) that no live save will finish.

    Dead: made by this process (which saves one checkpoint at a time), by a pid that no longer runs
    here, or, with `stale_before`, last changed before it. A live process's newer one is kept.
    """
    removed = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        match = _TEMP_PATTERN.match(path.name)
        if match is None:
            continue
        pid = int(match["pid"])
        try:
            old = stale_before is not None and path.lstat().st_mtime < stale_before
        except FileNotFoundError:
            continue
        if pid == os.getpid() or not pid_alive(pid) or old:
            log.info("removing %s, left by a checkpoint save that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _to_cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Cloned and contiguous: `trainable_state_dict` shares memory with the live parameters.
    return {name: t.detach().to("cpu").clone().contiguous() for name, t in tensors.items()}


def load_checkpoint(
    path: str | Path,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> tuple[dict[str, torch.Tensor], TrainingState]:
    """Load optimizer and scheduler state in place; returns the trainable tensors (for
    `model.load_trainable_state_dict`) and the training state (its RNGs go back with `restore_rngs`)."""
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
    return trainable, state


def load_ema(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The checkpoint's EMA tensors, or None when it has none (a run without ema_decay)."""
    ema_path = Path(path) / EMA_NAME
    return load_file(ema_path) if ema_path.is_file() else None


def inference_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights to generate with from a checkpoint: its EMA when present, else its trainable tensors.

    model.load_trainable_state_dict(inference_weights(latest_checkpoint(run_dir)))
    """
    path = Path(path)
    ema = load_ema(path)
    if ema is not None:
        return ema
    if not (path / TRAINABLE_NAME).is_file():
        raise FileNotFoundError(f"checkpoint {path}: missing {TRAINABLE_NAME}")
    return load_file(path / TRAINABLE_NAME)

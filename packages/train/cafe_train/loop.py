"""The training loop: `train(config) -> TrainResult`, in-process, with accelerate for devices and precision.

    from cafe_train import TrainConfig, train
    result = train(TrainConfig(shards=["out/triples"], output_dir="runs/tiny", preset="tiny", max_steps=100))

Run it again with the same `output_dir` and a larger `max_steps` and it resumes from the latest
checkpoint there (weights, optimizer, schedule, RNGs and data position), reproducing the losses an
uninterrupted run would have logged (bit for bit on CPU with the same num_workers and world size).

Each optimizer step: DDPM noise at a uniform timestep, the model's prediction against the noise
(or the velocity for v-prediction bases), MSE optionally weighted up on the subject mask and by
min-SNR-gamma per timestep (`cafe_train.loss`), AdamW over `model.trainable_parameters()` only,
gradient clipping, a linear warmup then a constant or cosine schedule, then (with `ema_decay`) an
update of the EMA of the trainable parameters (`cafe_train.ema`).

What a run writes under `RUN/` (= `config.output_dir`), from the main process:

    metrics.jsonl, tensorboard/   every `log_every` steps: loss, lr, grad_norm, samples_per_s, data_wait_share,
                                  skipped_samples and flagged_samples (samples the loader passed over since the
                                  previous logged step, summed over ranks: unreadable ones, each named in a
                                  warning, and flagged or excluded ones; see `cafe_train.loader`)
                                  (`cafe_train.metrics_log`; `tensorboard --logdir RUN/tensorboard`)
    checkpoints/step-NNNNNN/      every `checkpoint_every` steps and at the end (`cafe_train.checkpoint`)
    validation/step-NNNNNN.png    every `validate_every` steps: references | generations with the current
                                  (not EMA) weights, also a TensorBoard image (`cafe_train.validation`)

To generate from a checkpoint, load the EMA weights when it has them (runs with `ema_decay`), else the
trainable ones: `model.load_trainable_state_dict(cafe_train.checkpoint.inference_weights(path))`.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import gather_object
from diffusers import DDPMScheduler
from torch.optim.lr_scheduler import LambdaLR

from cafe_core.lock import WriterLock
from cafe_model.load import load_model
from cafe_train.checkpoint import (
    TrainingState,
    capture_rngs,
    latest_checkpoint,
    load_checkpoint,
    load_ema,
    restore_rngs,
    save_checkpoint,
)
from cafe_train.config import TrainConfig, check_shards
from cafe_train.ema import ParameterEMA
from cafe_train.loader import build_loader
from cafe_train.loss import diffusion_loss, diffusion_target, min_snr_weights
from cafe_train.metrics_log import METRICS_NAME, MetricsLog
from cafe_train.rank_record import RankRecorder
from cafe_train.validation import Validation

# diffusion_loss, diffusion_target and METRICS_NAME moved out with their concepts; importable from here still.
__all__ = ["METRICS_NAME", "CheckpointHook", "TrainResult", "diffusion_loss", "diffusion_target", "lr_lambda", "train"]


@dataclass
class TrainResult:
    """What a run did: `losses[i]` is the loss of optimizer step `first_step + i + 1`.

    `num_skipped` / `num_flagged`: samples the loader passed over as unreadable / flagged or excluded, summed
    over ranks, up to the last logged step (what metrics.jsonl counts)."""

    run_dir: Path
    first_step: int
    last_step: int
    losses: list[float] = field(default_factory=list)
    last_checkpoint: Path | None = None
    num_skipped: int = 0
    num_flagged: int = 0

    def loss_at(self, step: int) -> float:
        return self.losses[step - self.first_step - 1]


def lr_lambda(config: TrainConfig) -> Any:
    """The learning-rate factor per step: linear warmup, then constant or cosine down to zero at max_steps."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


CheckpointHook = Callable[[int, Path | None, dict[str, float]], None]


def train(config: TrainConfig, *, on_checkpoint: CheckpointHook | None = None) -> TrainResult:
    """Train `config.preset`'s trainable parameters on `config.shards`; resume from `config.output_dir` if it
    holds a checkpoint. Returns the losses of the steps this call ran.

    `on_checkpoint(step, path, metrics)` runs on every rank after each checkpoint step, once all ranks are
    there: `path` is the checkpoint folder on the main process and None on the others, `metrics` holds
    the step's `loss`. Launchers use it to report checkpoints (Ray Train's `ray.train.report` must be
    called by every worker).

    One trainer per run folder: the main process (rank 0) holds RUN's lock (cafe_core.lock) for the whole
    run, so a second trainer into the same RUN is refused with WriterLockedError naming this one, before it
    loads a model or writes a file."""
    if os.environ.get("RANK", "0") != "0":  # a launched rank > 0: rank 0 holds the run's lock
        return _train(config, on_checkpoint, None)
    with WriterLock(config.output_dir, "training") as run_lock:
        return _train(config, on_checkpoint, run_lock)


def _train(config: TrainConfig, on_checkpoint: CheckpointHook | None, run_lock: WriterLock | None) -> TrainResult:
    num_samples = check_shards(config.shards)
    # accelerate keeps its precision and accumulation settings in process-wide singletons that refuse
    # a change: a second run in this process (a test, the training service) starts from a clean state.
    # The process group (PartialState) is kept, so a launched multi-process job is unaffected.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum_steps,
    )
    rank = accelerator.process_index
    # Grids come from the main process only (every rank holds the same weights); its references are read
    # now, so a set with none to show fails before any model loads.
    validation = Validation(config) if accelerator.is_main_process and config.validate_every is not None else None
    _seed_everything(config.seed)  # the same fresh projector on every rank
    model = load_model(config.preset, device=accelerator.device, cache_dir=config.model_cache_dir)
    model.train()
    parameters = model.trainable_parameters()
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = LambdaLR(optimizer, lr_lambda(config))
    noise_scheduler = DDPMScheduler.from_config(model.scheduler_config)
    num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
    loader = build_loader(
        config,
        tokenizer=model.tokenizer,
        reference_processor=model.reference_encoder.image_processor,
        num_samples=num_samples,
        world_size=accelerator.num_processes,
        latent_factor=model.vae_scale_factor,
    )
    dataset = loader.dataset
    # Noise, timesteps and VAE samples come from this generator, checkpointed with the rest.
    noise_generator = torch.Generator().manual_seed(config.seed * 1000 + rank + 1)
    step, epoch, batches_done = 0, 0, 0

    run_dir = config.output_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    recorder = RankRecorder.from_env(run_dir, rank, accelerator.num_processes)  # $CAFE_TRAIN_RECORD_RANKS
    resume_from = latest_checkpoint(run_dir)
    if resume_from is not None:
        trainable, state = load_checkpoint(
            resume_from, optimizer=optimizer, scheduler=scheduler, grad_scaler=accelerator.scaler
        )
        model.load_trainable_state_dict(trainable)
        restore_rngs(state, rank, accelerator.num_processes, noise_generator)
        step, epoch, batches_done = state.step, state.epoch, state.batches_done
    first_step = step
    ema = None
    if config.ema_decay is not None:
        # Starts from the weights training starts from: fresh, or resumed (a checkpoint of a run that had
        # no EMA yet starts it there); a checkpoint's own EMA replaces that, so a resume is exact.
        ema = ParameterEMA(model.named_trainable_parameters(), config.ema_decay)
        saved_ema = load_ema(resume_from) if resume_from is not None else None
        if saved_ema is not None:
            ema.load_state_dict(saved_ema)
    # The schedule is not prepared: accelerate would step it once per process, and its steps here are
    # optimizer steps, whatever the number of processes.
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    result = TrainResult(run_dir=run_dir, first_step=first_step, last_step=step)
    config_record = asdict(config)

    def save(rank_rngs: list[dict[str, Any]]) -> Path:
        return save_checkpoint(
            run_dir,
            trainable=core.trainable_state_dict(),
            optimizer=optimizer,
            scheduler=scheduler,
            state=TrainingState(step, epoch, batches_done, rank_rngs),
            config=config_record,
            keep=config.keep_checkpoints,
            grad_scaler=accelerator.scaler,
            ema=ema.state_dict() if ema is not None else None,
            stale_before=run_lock.acquired_at if run_lock is not None else None,  # older temporaries are dead
        )

    def batches():
        nonlocal epoch, batches_done
        while True:
            dataset.set_position(epoch, batches_done)
            yield from loader
            epoch, batches_done = epoch + 1, 0

    # Logs come from the main process only, like the grids.
    log = MetricsLog(run_dir, resume_step=first_step) if accelerator.is_main_process else None
    stream = batches()
    # Samples this rank's loader passed over since the last logged step: (unreadable, flagged or excluded).
    passed_over = torch.zeros(2, dtype=torch.long)
    try:
        while step < config.max_steps:
            step_start = time.perf_counter()
            wait_s, micro_losses, samples = 0.0, [], 0
            for _ in range(config.grad_accum_steps):
                wait_start = time.perf_counter()
                batch = next(stream)
                wait_s += time.perf_counter() - wait_start
                recorder.saw(batch["keys"])
                batches_done += 1
                samples += len(batch["keys"])
                passed_over += torch.tensor([batch["num_skipped"], batch["num_flagged"]])
                with accelerator.accumulate(model):
                    loss = _micro_step(
                        core, model, batch, noise_scheduler, noise_generator, num_train_timesteps, config
                    )
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
                    optimizer.step()  # accelerate skips it (and zero_grad) until the last micro-batch
                    if accelerator.sync_gradients and not optimizer.step_was_skipped:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                micro_losses.append(loss.detach().float().item())
            step += 1
            if ema is not None:
                ema.update(core.named_trainable_parameters())
            step_loss = float(np.mean(micro_losses))
            result.losses.append(step_loss)
            step_s = time.perf_counter() - step_start
            if step % config.log_every == 0:
                # On every rank (a collective), so the counts are the whole job's, not rank 0's share.
                num_skipped, num_flagged = accelerator.reduce(passed_over.to(accelerator.device), "sum").tolist()
                passed_over.zero_()
                result.num_skipped += num_skipped
                result.num_flagged += num_flagged
            if log is not None and step % config.log_every == 0:
                log.scalars(
                    step,
                    {
                        "loss": step_loss,
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "samples_per_s": samples * accelerator.num_processes / step_s,
                        "data_wait_share": wait_s / step_s,
                        "skipped_samples": num_skipped,
                        "flagged_samples": num_flagged,
                    },
                )
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                # Every rank's RNGs go into the checkpoint (a collective: all ranks take part).
                rank_rngs = gather_object([capture_rngs(noise_generator)])
                saved = save(rank_rngs) if accelerator.is_main_process else None
                result.last_checkpoint = saved or result.last_checkpoint
                accelerator.wait_for_everyone()
                if on_checkpoint is not None:
                    on_checkpoint(step, saved, {"loss": step_loss})
            # After the checkpoint, so a failed generation loses no training. The other ranks run on to
            # the next step's gradient sync and wait there (seconds, far below the process group timeout).
            if validation is not None and step % config.validate_every == 0:
                _, grid = validation(core, step)
                log.image("validation", step, grid)
    finally:
        stream.close()
        if log is not None:
            log.close()
    result.last_step = step
    if result.last_checkpoint is None:
        result.last_checkpoint = latest_checkpoint(run_dir)
    recorder.write(first_step, step, core.trainable_state_dict())
    return result


def _micro_step(
    core: Any,
    model: Any,
    batch: dict[str, Any],
    noise_scheduler: DDPMScheduler,
    generator: torch.Generator,
    num_train_timesteps: int,
    config: TrainConfig,
) -> torch.Tensor:
    """The loss of one micro-batch (frozen encoders under no_grad, the trainable graph through `model`)."""
    device = core.device
    target_pixels = batch["target_pixels"].to(device)
    latents = core.encode_latents(target_pixels, generator=_generator_for(generator, device))
    text_tokens = core.encode_text(batch["prompt_ids"].to(device))
    features = core.encode_reference(batch["reference_pixels"].to(device=device, dtype=core.dtype))
    drop = batch["drop_reference"].to(device)
    if drop.any():
        null = core.reference_encoder.null_features(features.shape[0]).to(features.dtype)
        shape = (-1,) + (1,) * (features.ndim - 1)
        features = torch.where(drop.view(shape), null, features)
    batch_size = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(device=device, dtype=latents.dtype)
    timesteps = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator).to(device)
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    target = diffusion_target(noise_scheduler, latents, noise, timesteps)
    prediction = model(noisy_latents, timesteps, text_tokens, features)
    mask = batch["mask"].to(device) if config.mask_loss_weight != 1.0 else None
    snr_weights = None
    if config.min_snr_gamma is not None:
        snr_weights = min_snr_weights(noise_scheduler, timesteps, config.min_snr_gamma)
    return diffusion_loss(prediction, target, mask, config.mask_loss_weight, snr_weights)


def _generator_for(generator: torch.Generator, device: torch.device) -> torch.Generator | None:
    # The VAE samples on its device; a CPU generator only drives CPU sampling. Elsewhere the device's
    # default generator (seeded by accelerate's set_seed) is used, so GPU runs are not bit-reproducible here.
    return generator if device.type == "cpu" else None

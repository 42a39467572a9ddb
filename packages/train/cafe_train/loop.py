"""The training loop: `train(config) -> TrainResult`, in-process, with accelerate for devices and precision.

    from cafe_train import TrainConfig, train
    result = train(TrainConfig(shards=["out/triples"], output_dir="runs/tiny", preset="tiny", max_steps=100))

Run it again with the same `output_dir` and a larger `max_steps` and it resumes from the latest
checkpoint there (weights, optimizer, schedule, RNGs and data position), reproducing the losses an
uninterrupted run would have logged (bit for bit on CPU with the same num_workers and world size).

Each optimizer step: DDPM noise at a uniform timestep, the model's prediction against the noise
(or the velocity for v-prediction bases), MSE optionally weighted up on the subject mask, AdamW over
`model.trainable_parameters()` only, gradient clipping, a linear warmup then a constant or cosine
schedule. `RUN/metrics.jsonl` gets one line per logged step: step, loss, lr, grad_norm,
samples_per_s, data_wait_share.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from diffusers import DDPMScheduler
from torch.optim.lr_scheduler import LambdaLR

from cafe_model.load import load_model
from cafe_train.checkpoint import TrainingState, latest_checkpoint, load_checkpoint, save_checkpoint
from cafe_train.config import TrainConfig, check_shards
from cafe_train.loader import build_loader

METRICS_NAME = "metrics.jsonl"


@dataclass
class TrainResult:
    """What a run did: `losses[i]` is the loss of optimizer step `first_step + i + 1`."""

    run_dir: Path
    first_step: int
    last_step: int
    losses: list[float] = field(default_factory=list)
    last_checkpoint: Path | None = None

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


def diffusion_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, mask_weight: float
) -> torch.Tensor:
    """MSE; with a mask and `mask_weight` != 1 the subject's latent cells weigh `mask_weight` times the rest."""
    error = F.mse_loss(prediction.float(), target.float(), reduction="none")
    if mask is None or mask_weight == 1.0:
        return error.mean()
    weights = 1.0 + (mask_weight - 1.0) * mask.to(error.dtype)
    weights = weights.expand_as(error)
    return (error * weights).sum() / weights.sum()


def diffusion_target(
    noise_scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet learns to predict: the noise (epsilon bases, SD 1.5) or the velocity (v-prediction, SD 2.1)."""
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type={prediction_type!r} is not supported for training; use epsilon or v_prediction")


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
    called by every worker)."""
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
    )
    dataset = loader.dataset
    # Noise, timesteps and VAE samples come from this generator, checkpointed with the rest.
    noise_generator = torch.Generator().manual_seed(config.seed * 1000 + rank + 1)
    step, epoch, batches_done = 0, 0, 0

    run_dir = config.output_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    resume_from = latest_checkpoint(run_dir)
    if resume_from is not None:
        trainable, state = load_checkpoint(
            resume_from, optimizer=optimizer, scheduler=scheduler, grad_scaler=accelerator.scaler
        )
        model.load_trainable_state_dict(trainable)
        noise_generator.set_state(state.noise_generator_state)
        step, epoch, batches_done = state.step, state.epoch, state.batches_done
    first_step = step
    # The schedule is not prepared: accelerate would step it once per process, and its steps here are
    # optimizer steps, whatever the number of processes.
    model, optimizer = accelerator.prepare(model, optimizer)
    core = accelerator.unwrap_model(model)
    result = TrainResult(run_dir=run_dir, first_step=first_step, last_step=step)
    config_record = asdict(config)

    def save() -> Path:
        return save_checkpoint(
            run_dir,
            trainable=core.trainable_state_dict(),
            optimizer=optimizer,
            scheduler=scheduler,
            state=TrainingState(step, epoch, batches_done, noise_generator.get_state()),
            config=config_record,
            keep=config.keep_checkpoints,
            grad_scaler=accelerator.scaler,
        )

    def batches():
        nonlocal epoch, batches_done
        while True:
            dataset.set_position(epoch, batches_done)
            yield from loader
            epoch, batches_done = epoch + 1, 0

    metrics_path = run_dir / METRICS_NAME
    stream = batches()
    try:
        while step < config.max_steps:
            step_start = time.perf_counter()
            wait_s, micro_losses, samples = 0.0, [], 0
            for _ in range(config.grad_accum_steps):
                wait_start = time.perf_counter()
                batch = next(stream)
                wait_s += time.perf_counter() - wait_start
                batches_done += 1
                samples += len(batch["keys"])
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
            step_loss = float(np.mean(micro_losses))
            result.losses.append(step_loss)
            step_s = time.perf_counter() - step_start
            if accelerator.is_main_process and step % config.log_every == 0:
                record = {
                    "step": step,
                    "loss": step_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "samples_per_s": samples * accelerator.num_processes / step_s,
                    "data_wait_share": wait_s / step_s,
                }
                with open(metrics_path, "a") as metrics:
                    metrics.write(json.dumps(record) + "\n")
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                saved = save() if accelerator.is_main_process else None
                result.last_checkpoint = saved or result.last_checkpoint
                accelerator.wait_for_everyone()
                if on_checkpoint is not None:
                    on_checkpoint(step, saved, {"loss": step_loss})
    finally:
        stream.close()
    result.last_step = step
    if result.last_checkpoint is None:
        result.last_checkpoint = latest_checkpoint(run_dir)
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
    return diffusion_loss(prediction, target, mask, config.mask_loss_weight)


def _generator_for(generator: torch.Generator, device: torch.device) -> torch.Generator | None:
    # The VAE samples on its device; a CPU generator only drives CPU sampling. Elsewhere the device's
    # default generator (seeded by accelerate's set_seed) is used, so GPU runs are not bit-reproducible here.
    return generator if device.type == "cpu" else None

"""Training benchmark: cafe_train's `train()` against a bare loop on the same model, side by side.

Run from the repository root:

    .venv/bin/python bench/train.py              # CPU, tiny preset: 2-4 minutes on 2 cores
    .venv/bin/python bench/train.py --quick      # fewer steps and repeats, about a minute
    .venv/bin/python bench/train.py --gpu        # one CUDA GPU: sd15-random at 512 px (exits 2 without CUDA)
    make bench                                   # every benchmark, this one in its CPU mode

What it measures (CPU; the tiny preset at 64 px, batch 8, 2 loader workers, 1 torch thread, the loop's
defaults otherwise):
- data wait: the share of step time `train()` spent waiting for its next batch, the mean of
  `data_wait_share` in RUN/metrics.jsonl over the timed steps (target <= 0.05).
- samples/s of `train()` against a bare loop: the same preset loaded the same way, the same AdamW over
  the same trainable parameters, the same noise / timestep / MSE step with gradient clipping, on a few
  batches our loader made once and kept in memory (no loader, no accelerate, no metrics, no checkpoint).
  Each side's rate is its samples over the wall time from the end of the last warm-up step to the end of
  the last step (for `train()`, the moments its metrics lines appear, seen by a thread polling the file),
  so model loading, the shuffle buffer's first fill and the final checkpoint are left out. Runs are
  interleaved (train, bare, bare, train, ...) and the best of each side is kept (target >= 0.9).
- --gpu: the same two figures are not the point there; it reports `train()` samples/s on `sd15-random`
  (SD 1.5's and CLIP ViT-L/14's architectures at random init: the real compute) at 512 px with bf16
  autocast (target >= 25 on one H100), and seconds per 512 px image of `CustomizationPipeline` at 30 DDIM
  steps in fp16 with guidance (target <= 1.5 s), best of a few calls after a warm-up.

Human-readable lines come first; the ratio lines (`name value`) are the last thing printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_WAIT_TARGET = 0.05
TRAIN_VS_BARE_TARGET = 0.9
GPU_SAMPLES_PER_S_TARGET = 25.0
GPU_S_PER_IMAGE_TARGET = 1.5
METRICS_POLL_S = 0.005
# Epochs longer than any run here: an epoch boundary restarts the loader's workers and refills the
# shuffle buffer, a cost real sets (thousands of samples per epoch) pay rarely; this bench times steady state.
EPOCH_SAMPLES = 1_000_000


@dataclass
class TrainRun:
    samples_per_s: float  # wall-clock, timed steps only
    metrics_samples_per_s: float  # from the loop's own per-step timing, same steps
    data_wait_share: float
    num_timed_steps: int


def write_bench_set(root: Path, num_samples: int, size_px: tuple[int, int]) -> Path:
    """A closed shard set of `num_samples` deterministic triples (tests/factories.py's, a little larger)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests/ is not a package; its factories build tiny triples
    from factories import make_triple, ok_input

    from cafe_core import ShardSet

    with ShardSet(root).writer(mode="overwrite", fsync=False, max_samples=64) as writer:
        for index in range(num_samples):
            triple = make_triple(index, size=size_px)
            writer.add(ok_input(triple), [triple])
    return root


class MetricsClock:
    """When each step's metrics line appeared in RUN/metrics.jsonl, seen by a thread polling the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.step_times: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="bench-metrics-clock", daemon=True)

    def _poll(self) -> None:
        offset, partial = 0, b""
        while True:
            stopping = self._stop.is_set()
            if self.path.is_file():
                with open(self.path, "rb") as file:
                    file.seek(offset)
                    chunk = file.read()
                now = time.perf_counter()
                offset += len(chunk)
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        self.step_times.setdefault(json.loads(line)["step"], now)
            if stopping:
                return
            time.sleep(METRICS_POLL_S)

    def __enter__(self) -> MetricsClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_ours(config: Any, warmup_steps: int) -> TrainRun:
    """`train(config)` in a fresh RUN folder; its figures over the steps after `warmup_steps`."""
    from cafe_train.loop import METRICS_NAME, train

    shutil.rmtree(config.output_dir, ignore_errors=True)
    metrics_path = config.output_dir / METRICS_NAME
    with MetricsClock(metrics_path) as clock:
        train(config)
    records = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    timed = [r for r in records if r["step"] > warmup_steps]
    last = config.max_steps
    wall_s = clock.step_times[last] - clock.step_times[warmup_steps]
    samples = config.batch_size * len(timed)
    step_s = sum(config.batch_size / r["samples_per_s"] for r in timed)
    return TrainRun(
        samples_per_s=samples / wall_s,
        metrics_samples_per_s=samples / step_s,
        data_wait_share=sum(r["data_wait_share"] for r in timed) / len(timed),
        num_timed_steps=len(timed),
    )


def collect_batches(config: Any, num_batches: int) -> list[dict[str, Any]]:
    """`num_batches` batches from our own loader (in this process), kept in memory for the bare loop."""
    from cafe_model.load import load_model
    from cafe_train.config import check_shards
    from cafe_train.loader import build_loader

    model = load_model(config.preset, cache_dir=config.model_cache_dir)
    loader = build_loader(
        config,
        tokenizer=model.tokenizer,
        reference_processor=model.reference_encoder.image_processor,
        num_samples=check_shards(config.shards),
    )
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == num_batches:
            break
    return batches


def run_bare(config: Any, batches: list[dict[str, Any]], warmup_steps: int) -> float:
    """The same model and optimizer step with nothing around it; samples/s over the steps after warm-up."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from cafe_model.load import load_model

    torch.manual_seed(config.seed)
    model = load_model(config.preset, cache_dir=config.model_cache_dir)
    model.train()
    parameters = model.trainable_parameters()
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    noise_scheduler = DDPMScheduler.from_config(model.scheduler_config)
    num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
    generator = torch.Generator().manual_seed(config.seed)
    step_ends = []
    for step in range(config.max_steps):
        batch = batches[step % len(batches)]
        latents = model.encode_latents(batch["target_pixels"], generator=generator)
        text_tokens = model.encode_text(batch["prompt_ids"])
        features = model.encode_reference(batch["reference_pixels"])
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, num_train_timesteps, (latents.shape[0],), generator=generator)
        prediction = model(noise_scheduler.add_noise(latents, noise, timesteps), timesteps, text_tokens, features)
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the loop reads every loss too (a device sync on GPUs)
        step_ends.append(time.perf_counter())
    timed_steps = config.max_steps - warmup_steps
    return timed_steps * config.batch_size / (step_ends[-1] - step_ends[warmup_steps - 1])


def cpu_benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    import torch

    from cafe_train import TrainConfig

    steps, warmup, repeats = (16, 4, 2) if args.quick else (args.steps, args.warmup, args.repeats)
    # One torch thread on both sides: the tiny model is all per-op overhead (a second thread buys little), and
    # on a 2-core machine the loader's worker processes need the other core. Both sides get the same setting.
    torch.set_num_threads(args.cpu_threads)
    shards = write_bench_set(scratch / "set", 256, (96, 80))  # downscaled to 64 px, as real photos are
    config = TrainConfig(
        shards=[shards],
        output_dir=scratch / "run",
        preset="tiny",
        resolution_px=64,
        batch_size=8,
        num_workers=2,
        max_steps=warmup + steps,
        epoch_samples=EPOCH_SAMPLES,
        checkpoint_every=10_000,
        keep_checkpoints=1,
    )
    print(
        f"cpu: tiny preset, {config.resolution_px} px, batch {config.batch_size}, {config.num_workers} loader "
        f"workers, {torch.get_num_threads()} torch threads; {warmup} warm-up + {steps} timed steps, "
        f"{repeats} interleaved runs per side, best kept"
    )
    batches = collect_batches(dataclasses.replace(config, num_workers=0), 4)
    ours: list[TrainRun] = []
    bare: list[float] = []
    for rep in range(repeats):
        order = ("ours", "bare") if rep % 2 == 0 else ("bare", "ours")
        for side in order:
            if side == "ours":
                ours.append(run_ours(config, warmup))
            else:
                bare.append(run_bare(config, batches, warmup))
    for index, run in enumerate(ours):
        print(
            f"train()  run {index}: {run.samples_per_s:7.1f} samples/s wall ({run.metrics_samples_per_s:.1f} by the "
            f"loop's step timer), data wait {run.data_wait_share:.3f} of step time over {run.num_timed_steps} steps"
        )
    for index, rate in enumerate(bare):
        print(f"bare     run {index}: {rate:7.1f} samples/s wall")
    best_ours = max(r.samples_per_s for r in ours)
    best_wait = min(r.data_wait_share for r in ours)
    best_bare = max(bare)
    print(f"best: train() {best_ours:.1f} samples/s, bare {best_bare:.1f} samples/s, data wait {best_wait:.3f}")
    return {
        "data_wait_share": best_wait,
        "data_wait_vs_target": best_wait / DATA_WAIT_TARGET,
        "train_vs_bare": best_ours / best_bare,
        "train_vs_bare_vs_target": best_ours / best_bare / TRAIN_VS_BARE_TARGET,
    }


def gpu_benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        print(
            "bench/train.py --gpu: CUDA is not available here (torch.cuda.is_available() is False); run it on a "
            "machine with an NVIDIA GPU, or without --gpu for the CPU benchmark",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from cafe_model.load import load_pipeline
    from cafe_train import TrainConfig

    steps, warmup = (10, 3) if args.quick else (args.steps, args.warmup)
    device_name = torch.cuda.get_device_name()
    shards = write_bench_set(scratch / "set", 128, (576, 512))
    config = TrainConfig(
        shards=[shards],
        output_dir=scratch / "run",
        preset="sd15-random",
        resolution_px=512,
        batch_size=args.gpu_batch,
        num_workers=args.gpu_workers,
        mixed_precision="bf16",
        max_steps=warmup + steps,
        epoch_samples=EPOCH_SAMPLES,
        checkpoint_every=10_000,
        keep_checkpoints=1,
    )
    print(
        f"gpu: {device_name}, sd15-random at {config.resolution_px} px, batch {config.batch_size}, bf16 autocast, "
        f"{config.num_workers} loader workers; {warmup} warm-up + {steps} timed steps"
    )
    run = run_ours(config, warmup)
    print(
        f"train()  {run.samples_per_s:.1f} samples/s wall ({run.metrics_samples_per_s:.1f} by the loop's step "
        f"timer), data wait {run.data_wait_share:.3f}"
    )
    torch.cuda.empty_cache()

    from PIL import Image

    pipeline = load_pipeline("sd15-random", device="cuda", dtype=torch.float16)
    reference = Image.new("RGB", (512, 512), (200, 30, 30))
    settings = {"num_steps": 30, "text_guidance": 7.5, "reference_guidance": 7.5, "height_px": 512, "width_px": 512}
    pipeline(reference, "a photo of red cube on a beach", **{**settings, "num_steps": 2})  # warm-up: kernels, cache
    best_s = float("inf")
    for seed in range(args.gpu_images):
        torch.cuda.synchronize()
        start = time.perf_counter()
        pipeline(reference, "a photo of red cube on a beach", seed=seed, **settings)  # PIL out: synced
        best_s = min(best_s, time.perf_counter() - start)
    print(f"generate 512 px, 30 DDIM steps, guidance 7.5 (2 branches), fp16: best {best_s:.3f} s per image")
    return {
        "gpu_train_samples_per_s_512": run.samples_per_s,
        "gpu_train_vs_target": run.samples_per_s / GPU_SAMPLES_PER_S_TARGET,
        "gpu_data_wait_share": run.data_wait_share,
        "gpu_s_per_image_30_steps": best_s,
        "gpu_s_per_image_vs_target": best_s / GPU_S_PER_IMAGE_TARGET,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--gpu", action="store_true", help="sd15-random at 512 px on CUDA instead of the CPU run")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, CPU (default 3)")
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads, CPU run (default 1)")
    parser.add_argument("--gpu-batch", type=int, default=16, help="batch size with --gpu (default 16)")
    parser.add_argument("--gpu-workers", type=int, default=8, help="loader workers with --gpu (default 8)")
    parser.add_argument("--gpu-images", type=int, default=3, help="timed generations with --gpu (default 3)")
    args = parser.parse_args(argv)
    counts = {
        "--steps": args.steps,
        "--warmup": args.warmup,
        "--repeats": args.repeats,
        "--cpu-threads": args.cpu_threads,
        "--gpu-batch": args.gpu_batch,
        "--gpu-workers": args.gpu_workers,
        "--gpu-images": args.gpu_images,
    }
    for flag, value in counts.items():
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="cafe-bench-train-"))
    try:
        ratios = gpu_benchmark(args, scratch) if args.gpu else cpu_benchmark(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    for name, value in ratios.items():
        print(f"{name} {value:.3f}")


if __name__ == "__main__":
    main()

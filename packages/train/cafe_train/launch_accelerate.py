"""Run `train` as N data-parallel processes with `accelerate launch`, one per GPU (or CPU process).

    from cafe_train.launch_accelerate import launch_accelerate
    exit_code = launch_accelerate(config, 2)                  # 2 processes here: NCCL on GPUs, gloo on CPU
    exit_code = launch_accelerate(config, 16, accelerate_config=Path("node.yaml"))   # on each machine

It writes the config to `RUN/train-config.json` and runs, with this interpreter's accelerate,

    python -m accelerate.commands.launch --num_processes N [--multi_gpu | --cpu] \
        -m cafe_train.worker RUN/train-config.json

streaming the processes' output to this process's stdout and to `RUN/launch-accelerate.log`.
Rerunning it on the same run folder resumes from the latest checkpoint there.

Why not `accelerate launch --cpu` for N > 1 CPU processes: `--cpu` takes accelerate's single-process
launcher (several CPU processes need mpirun there). So CPU runs of N > 1 use the torchrun launcher
(`--multi_gpu`, which only means "N local processes") with `ACCELERATE_USE_CPU=true`, which makes each
process take accelerate's multi-CPU path: a gloo process group over RANK / WORLD_SIZE / MASTER_ADDR.

Multi-node: give an accelerate config file (`accelerate config`: num_machines, machine_rank,
main_process_ip, main_process_port) and call this on every machine with its own file. The file then
chooses the launcher, `num_workers` is the total number of processes over all machines, and the run
folder and shards must be on storage every machine reads (each rank reads the latest checkpoint).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from cafe_core.lock import refuse_if_held
from cafe_train.config import TrainConfig
from cafe_train.config_io import write_config
from cafe_train.worker import prebuild_random_models

CONFIG_NAME = "train-config.json"
LOG_NAME = "launch-accelerate.log"
WORKER_MODULE = "cafe_train.worker"


def accelerate_command(
    config_path: Path, num_workers: int, *, accelerate_config: Path | None, cpu: bool, mixed_precision: str = "no"
) -> list[str]:
    """The `accelerate launch` command line for `num_workers` processes of `cafe_train.worker`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_workers)]
    if accelerate_config is not None:
        # The file says how many machines and which launcher; the command line only sets the count.
        command += ["--config_file", str(accelerate_config)]
    else:
        # Stated, so accelerate neither warns about defaults nor reads ~/.cache/huggingface's default config
        # for them; port 0 picks a free port, so two runs on one machine do not collide.
        command += ["--num_machines", "1", "--dynamo_backend", "no"]
        if num_workers > 1:
            command += ["--multi_gpu", "--main_process_port", "0"]
        elif cpu:
            command += ["--cpu"]
    command += ["--mixed_precision", mixed_precision, "-m", WORKER_MODULE, str(config_path)]
    return command


def launch_accelerate(
    config: TrainConfig,
    num_workers: int,
    *,
    accelerate_config: Path | None = None,
    cpu: bool | None = None,
) -> int:
    """Train `config` with `num_workers` processes under `accelerate launch`; returns its exit code (0: done).

    `cpu=None` trains on CPU when this machine has no CUDA device. `accelerate_config` (a file from
    `accelerate config`) passes through for multi-node runs; see the module doc. Output is streamed to
    stdout and kept in `RUN/launch-accelerate.log`.
    """
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
        raise ValueError(f"num_workers={num_workers!r}: must be an integer >= 1 (processes to launch)")
    if accelerate_config is not None and not Path(accelerate_config).is_file():
        raise FileNotFoundError(
            f"accelerate config {str(accelerate_config)!r}: no such file (write one with `accelerate config`)"
        )
    if cpu is None:
        cpu = not torch.cuda.is_available()
    run_dir = config.output_dir
    refuse_if_held(run_dir)  # a run in progress: refused before its train-config.json is overwritten
    config_path = write_config(config, run_dir / CONFIG_NAME)
    prebuild_random_models(config)  # once here, rather than by every process at once
    command = accelerate_command(
        config_path,
        num_workers,
        accelerate_config=Path(accelerate_config) if accelerate_config is not None else None,
        cpu=cpu,
        mixed_precision=config.mixed_precision,
    )
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"  # worker lines arrive as they are printed, not at exit
    # Set either way, so an inherited value cannot override `cpu`; "true": multi-CPU DDP over gloo (module doc).
    env["ACCELERATE_USE_CPU"] = "true" if cpu else "false"
    with open(run_dir / LOG_NAME, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
            return process.wait()
        except BaseException:
            # Ctrl-C or an error here: do not leave a training job running unobserved.
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise

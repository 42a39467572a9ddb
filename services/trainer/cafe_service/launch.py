"""Starting, probing and signalling job processes through Ray: a local Ray by default, RAY_ADDRESS's cluster.

    launcher = RayLauncher(address=None)          # ray.init on first use
    record = launcher.start(job_dir, ["data", "build", ...], env=None)   # {"pid", "host", "start_time", "node_id"}
    launcher.alive(record); launcher.signal(record, signal.SIGTERM)

`start` runs a zero-CPU Ray task that starts the job wrapper (`cafe_service.wrapper`) on the node Ray
picks, in its own session; the task returns as soon as the wrapper reports its pid, so a slot of the
service is a running process, not a blocked Ray worker. Probing and signalling a job on this machine
use psutil directly; on another node, a zero-CPU task pinned to that node does it.

Ray itself is imported here only: the API answers without it until the first job starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cafe_core.local_ray import prepare_local_ray
from cafe_service import process
from cafe_service.runner import LauncherUnavailable

START_TIMEOUT_S = 120.0
PROBE_TIMEOUT_S = 30.0
# What a Ray worker adds to its environment, which a job started from it must not inherit: a job is
# a fresh `cafe` command, with its own Ray driver, its threads and its devices.
RAY_WORKER_VARIABLES = (
    "RAY_JOB_ID",
    "RAY_RAYLET_PID",
    "RAY_CLIENT_MODE",
    "RAY_LD_PRELOAD_ON_WORKERS",
    "PYTHONBREAKPOINT",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)
# The service's own secrets: a job never needs them.
PRIVATE = ("CAFE_SERVICE_TOKEN",)
# Passed from the service to jobs on other nodes (their own environment is the node's).
FORWARDED_PREFIXES = ("CAFE_", "HF_", "RAY_ADDRESS", "TRANSFORMERS_", "TORCH_")


def _job_environment(base: dict[str, str] | None, extra: dict[str, str]) -> dict[str, str]:
    env = dict(base) if base is not None else {k: v for k, v in os.environ.items() if k not in RAY_WORKER_VARIABLES}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"  # the log follows the command as it prints
    return env


@ray.remote(num_cpus=0, max_retries=0)
def start_wrapper(job_dir: str, cafe_args: list[str], base_env: dict[str, str] | None, extra_env: dict[str, str]):
    """Start the wrapper running `cafe CAFE_ARGS` in JOBDIR; its pid, host, start time and node."""
    cafe = [sys.executable, "-m", "cafe_cli.main", *cafe_args]
    command = [sys.executable, "-m", "cafe_service.wrapper", "--job-dir", job_dir, "--", *cafe]
    started = subprocess.Popen(
        command,
        cwd=job_dir,
        env=_job_environment(base_env, extra_env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    stdout, stderr = started.communicate(timeout=START_TIMEOUT_S)
    lines = stdout.decode().splitlines()
    if started.returncode != 0 or not lines:
        raise RuntimeError(f"the job wrapper did not start: {stderr.decode(errors='replace').strip()[-500:]}")
    record = json.loads(lines[0])
    record["node_id"] = ray.get_runtime_context().get_node_id()
    return record


@ray.remote(num_cpus=0, max_retries=0)
def probe(pid: int, start_time: float) -> bool:
    return process.is_alive(pid, start_time)


@ray.remote(num_cpus=0, max_retries=0)
def signal_group(pid: int, start_time: float, signum: int) -> bool:
    return process.signal_group(pid, start_time, signum)


class RayUnavailable(LauncherUnavailable):
    """Ray could not be reached or started; jobs stay queued and the runner tries again later."""


class RayLauncher:
    """Jobs on Ray. `address=None`: a local Ray (1 CPU: the launch tasks take none; jobs run their own)."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._lock = threading.Lock()

    def _ensure_ray(self) -> None:
        with self._lock:
            if ray.is_initialized():
                return
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)  # a cluster brings its own settings
                else:
                    prepare_local_ray()  # 127.0.0.1 only, token on (cafe_core.local_ray)
                    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
            except Exception as exc:  # ConnectionError, a timeout, a bad address: the jobs wait
                where = self.address or "a local Ray"
                raise RayUnavailable(f"Ray at {where} is not available: {type(exc).__name__}: {exc}") from exc

    def start(self, job_dir: Path, cafe_args: list[str]) -> dict[str, Any]:
        """Start the job; raises RuntimeError (or Ray's error) when the wrapper could not start."""
        self._ensure_ray()
        if self.address:
            # Another node's environment is its own; pass on what configures cafe (caches, hub, Ray).
            base = None
            extra = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES) and k not in PRIVATE}
        else:
            # Local: the job runs with the service's environment, as if started from its shell. Ray's
            # worker variables are dropped; a RAY_ADDRESS would point the job at the service's own Ray.
            dropped = {*RAY_WORKER_VARIABLES, *PRIVATE, "RAY_ADDRESS"}
            base = {k: v for k, v in os.environ.items() if k not in dropped}
            extra = {}
        return ray.get(start_wrapper.remote(str(job_dir), cafe_args, base, extra), timeout=START_TIMEOUT_S + 30)

    def _on_node(self, record: dict[str, Any], task: Any, *args: Any) -> bool:
        self._ensure_ray()
        strategy = NodeAffinitySchedulingStrategy(record["node_id"], soft=False)
        try:
            return bool(ray.get(task.options(scheduling_strategy=strategy).remote(*args), timeout=PROBE_TIMEOUT_S))
        except (ray.exceptions.RayError, TimeoutError, ValueError):
            return False  # the node is gone (or unreachable): so is the process

    def alive(self, record: dict[str, Any]) -> bool:
        if record["host"] == process.HOST or not record.get("node_id"):
            return process.is_alive(record["pid"], record["start_time"])
        return self._on_node(record, probe, record["pid"], record["start_time"])

    def signal(self, record: dict[str, Any], signum: int) -> bool:
        if record["host"] == process.HOST or not record.get("node_id"):
            return process.signal_group(record["pid"], record["start_time"], signum)
        return self._on_node(record, signal_group, record["pid"], record["start_time"], signum)

"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cafe_core.local_ray import prepare_local_ray


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray with 2 CPUs for the whole session (starting one costs seconds)."""
    prepare_local_ray()  # as cafe starts its own: 127.0.0.1 only, token on
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache of this session only: tests never read or write ~/.cache."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models are all overhead: one thread is as fast as two, and does not collapse when other
    processes share the 2 cores (OpenMP threads spin-waiting on each other slow tiny ops 10-30x).
    Folders of model tests use it for every module (`usefixtures` or an autouse alias)."""
    import torch  # here, not at the top: tests that check what a light package imports run in this process

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

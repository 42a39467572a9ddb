"""Fixtures shared by every test folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray with 2 CPUs for the whole session (starting one costs seconds)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()

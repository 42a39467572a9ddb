"""What every Ray Data job of cafe_pipelines does the same way: connecting, stages as actor pools,
streaming with a bounded buffer, rows out of numpy batches, and partitions on shard numbers."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from cafe_core import ShardSet
from cafe_core.local_ray import prepare_local_ray
from cafe_pipelines.build_config import StageResources

Item = TypeVar("Item")


def ensure_ray() -> None:
    """Connect to the cluster in RAY_ADDRESS, or start a local Ray sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return
    prepare_local_ray()  # 127.0.0.1 only, token on (cafe_core.local_ray)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)


def configure_streaming(buffer_bytes: int) -> None:
    """Rows keep their input order (deterministic shards); a bounded object-store buffer backpressures
    the stages that run ahead, so memory stays flat; no progress bars (the CLI draws its own)."""
    import ray

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    limits = context.execution_options.resource_limits
    context.execution_options.resource_limits = limits.copy(object_store_memory=buffer_bytes)
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def map_stage(ds: Any, stage: type, resources: StageResources, kwargs: dict[str, Any]) -> Any:
    """`ds` through a pool of `stage` actors (constructed with `kwargs`), numpy batches."""
    import ray

    return ds.map_batches(
        stage,
        fn_constructor_kwargs=kwargs,
        batch_size=resources.batch_size,
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus,
        compute=ray.data.ActorPoolStrategy(size=resources.concurrency),
        batch_format="numpy",
    )


def stage_threads(resources: StageResources) -> int:
    """Torch threads for a stage's actor: its CPU share, at least one."""
    return max(1, round(resources.num_cpus))


def iter_rows(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The rows of a numpy batch (dict of columns) as dicts."""
    names = list(batch)
    for values in zip(*(batch[n] for n in names), strict=True):
        yield dict(zip(names, values, strict=True))


def plan_partitions(
    shard_set: ShardSet,
    items: Sequence[Item],
    per_shard: int,
    first_shard: int,
    key: Callable[[Item], str] = lambda item: item.input_key,  # type: ignore[attr-defined]
) -> list[tuple[int, list[Item]]]:
    """(shard number, items) per partition: items sorted by `key` in chunks, on the free shard numbers.

    With the done shards' items left out first (incremental), the chunks of a rerun are exactly the
    unfinished chunks of the first run: partitions are written in order, so done shards are a prefix.
    """
    done = set(shard_set.layout.done_numbers())
    numbers: list[int] = []
    number = first_shard
    ordered = sorted(items, key=key)
    chunks = [ordered[i : i + per_shard] for i in range(0, len(ordered), per_shard)]
    for _ in chunks:
        while number in done:
            number += 1
        numbers.append(number)
        number += 1
    return list(zip(numbers, chunks, strict=True))

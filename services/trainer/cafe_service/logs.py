"""A job's log as a stream: what JOBDIR/log.txt holds, then what is appended while the job runs.

    async for chunk in follow_log(path, offset=0, is_done=lambda: job_ended(), poll_s=0.25): ...

The job's state is read *before* each read of the file, so once it has ended, one last read sends
everything the command wrote and the stream ends. A client that goes away ends it too (Starlette
stops iterating on disconnect); nothing else bounds a follow, as a training run may take days.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from anyio import to_thread

CHUNK_BYTES = 64 * 1024


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read(CHUNK_BYTES)
    except FileNotFoundError:  # a queued job has no log yet
        return b""


async def follow_log(
    path: Path, *, offset: int, is_done: Callable[[], bool], poll_s: float, follow: bool = True
) -> AsyncIterator[bytes]:
    position = offset
    while True:
        done = (not follow) or await to_thread.run_sync(is_done)
        while True:
            chunk = await to_thread.run_sync(_read_from, path, position)
            if not chunk:
                break
            position += len(chunk)
            yield chunk
        if done:
            return
        await asyncio.sleep(poll_s)

"""Helpers for the training service's tests: a real server (a thread or a `cafe serve` process), clients, waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from cafe_service import ServiceSettings, create_app

TOKEN = "test-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}


class OffsetClock:
    """Wall time plus an offset the test moves: the service's "now", so a schedule need not wait a minute."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def move_to(self, timestamp: float) -> None:
        self.offset_s = timestamp - time.time()


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    """Poll `predicate` until it returns something truthy; AssertionError naming `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def free_socket() -> socket.socket:
    # proto=IPPROTO_TCP so asyncio turns Nagle off (see tests/inspector/live_server.py).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def service_in_thread(
    settings: ServiceSettings, *, clock: Callable[[], float] = time.time
) -> Iterator[tuple[str, Any]]:
    """The real app on uvicorn in a thread, on a free port of 127.0.0.1; yields (url, the Service)."""
    app = create_app(settings, clock=clock)
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    wait_for(lambda: server.started or not thread.is_alive(), timeout_s=30, what="uvicorn to start")
    assert thread.is_alive(), "uvicorn ended at start-up"
    try:
        yield url, app.app.state.service
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class ServeProcess:
    """`cafe serve` in its own process (so a test can SIGKILL it), on a free port."""

    def __init__(self, *, db: Path, roots: list[Path], slots: int, log_path: Path, env: dict[str, str]) -> None:
        with free_socket() as sock:
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "cafe_cli.main", "serve", "--port", str(self.port), "--db", str(db)]
        for root in roots:
            command += ["--root", str(root)]
        command += ["--slots", str(slots), "--poll-s", "0.2", "--cancel-grace-s", "2"]
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env={**env, "CAFE_SERVICE_TOKEN": TOKEN}
        )
        wait_for(self._healthy, timeout_s=60, what=f"`cafe serve` on port {self.port} (log: {log_path})")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"`cafe serve` exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as when a machine or the OOM killer ends it."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log.close()


def client(url: str, token: str | None = TOKEN) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def job_state(http: httpx.Client, job_id: int) -> dict[str, Any]:
    response = http.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_state(http: httpx.Client, job_id: int, states: tuple[str, ...], *, timeout_s: float) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = job_state(http, job_id)
        return job if job["state"] in states else None

    return wait_for(reached, timeout_s=timeout_s, what=f"job {job_id} to be {' or '.join(states)}", every_s=0.2)


def kill_group(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)

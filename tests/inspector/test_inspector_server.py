"""`cafe inspect serve` as a user runs it: a real uvicorn process on 127.0.0.1, then stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from inspector_sets import TOKEN

CAFE = Path(sys.executable).parent / "cafe"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cafe_inspect_serve_answers_on_loopback_with_a_token(served: Path) -> None:
    port = free_port()
    env = {**os.environ, "CAFE_INSPECTOR_TOKEN": TOKEN}
    process = subprocess.Popen(
        [str(CAFE), "inspect", "serve", str(served), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not come up: {process.communicate()[0]}") from None
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        assert httpx.get(f"{url}/api/sets").status_code == 401  # the token came from the environment
        sets = httpx.get(f"{url}/api/sets", headers={"authorization": f"Bearer {TOKEN}"}).json()["sets"]
        assert [s["path"] for s in sets] == ["big", "real", "rounds/round-1"]
        page = httpx.get(f"{url}/?token={TOKEN}", follow_redirects=True)
        assert page.status_code == 200 and "shard browser" in page.text
        # bound to 127.0.0.1: another host name is refused even with the token
        other = httpx.get(f"{url}/api/sets", headers={"host": "example.com", "x-cafe-token": TOKEN})
        assert other.status_code == 400
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output and TOKEN not in output  # the token is never printed


def test_serving_beyond_loopback_needs_a_token(served: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CAFE_INSPECTOR_TOKEN"}
    done = subprocess.run(
        [str(CAFE), "inspect", "serve", str(served), "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--token" in done.stderr


def test_serving_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(CAFE), "inspect", "serve", str(tmp_path / "nosuch")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "Error" in done.stderr


def test_a_port_in_use_exits_1_naming_the_port_and_the_flag(served: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # something else is serving on this port
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(CAFE), "inspect", "serve", str(served), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert f"port {port} on 127.0.0.1 is already in use" in message and "--port" in message, message
    assert "Traceback" not in done.stderr

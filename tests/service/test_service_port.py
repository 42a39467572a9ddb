"""`cafe serve` and its port: a port in use stops it at once with exit code 1 and a message naming the
port and `--port`, before it opens its database; a free port serves until Ctrl-C, which exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from service_helpers import TOKEN, free_socket, wait_for


def serve_command(port: int, state: Path, root: Path) -> list[str]:
    db = state / "service.db"
    return [sys.executable, "-m", "cafe_cli.main", "serve", "--port", str(port), "--db", str(db), "--root", str(root)]


def test_a_port_in_use_exits_1_naming_the_port_and_the_flag(tmp_path: Path, data_root: Path) -> None:
    with free_socket() as taken:
        taken.listen()  # something else is serving on this port
        port = taken.getsockname()[1]
        done = subprocess.run(
            serve_command(port, tmp_path / "state", data_root),
            env={**os.environ, "CAFE_SERVICE_TOKEN": TOKEN},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert f"port {port} on 127.0.0.1 is already in use" in message and "--port" in message, message
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()  # refused before the database was created


def test_a_free_port_serves_until_ctrl_c_which_exits_0(tmp_path: Path, data_root: Path) -> None:
    with free_socket() as sock:
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        serve_command(port, tmp_path / "state", data_root),
        env={**os.environ, "CAFE_SERVICE_TOKEN": TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"`cafe serve` exited with {process.returncode}: {process.communicate()[0]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, timeout_s=120, what=f"`cafe serve` on port {port}")
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}/" in output
    assert (tmp_path / "state" / "service.db").is_file()

"""The browser's body limit: a POST over `max_body_bytes` is refused with 413 before it is read whole,
by its Content-Length or, chunked without one, as soon as the bytes received pass the limit; and
`cafe inspect serve --max-body-kb` sets the limit."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from inspector_sets import real_triples
from live_server import serve_in_thread

from cafe_core import flagged_keys
from cafe_inspector import create_app
from cafe_inspector.guard import DEFAULT_MAX_BODY_BYTES

CAFE = Path(sys.executable).parent / "cafe"
REAL_KEYS = [t.key for t in real_triples()]
FIFTY_MB = 50 * 1024 * 1024
CHUNK = 64 * 1024


def flag_body(size: int) -> bytes:
    """A valid flag request of exactly `size` bytes (JSON may end with any amount of whitespace)."""
    body = json.dumps({"set": "real", "key": REAL_KEYS[0], "reason": "too big?"}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def send_until_answered(url: str, head: bytes, chunks: Iterator[bytes]) -> tuple[int, bytes]:
    """Send `head`, then `chunks` until the server answers (or the chunks run out) on a raw socket.

    Returns (body bytes sent, the answer). httpx would send the whole body before reading anything."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # answered: the rest is never sent
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed the connection after answering
                break
            sent += len(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            received = sock.recv(65536)
            if not received:
                break
            answer += received
    return sent, answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


# -- the limit, at its edge (the app in-process) --------------------------------------------------


def test_a_body_of_the_limit_is_read_and_one_byte_more_is_413(served: Path) -> None:
    client = TestClient(create_app(served, max_body_bytes=1024))
    headers = {"content-type": "application/json"}
    over = client.post("/api/flags", content=flag_body(1025), headers=headers)
    assert over.status_code == 413, over.text
    assert "1024 bytes" in over.json()["detail"] and "--max-body-kb" in over.json()["detail"]
    assert flagged_keys(served / "real") == set()
    fits = client.post("/api/flags", content=flag_body(1024), headers=headers)
    assert fits.status_code == 200, fits.text
    assert flagged_keys(served / "real") == {REAL_KEYS[0]}


def test_a_chunked_body_without_content_length_is_counted(served: Path) -> None:
    client = TestClient(create_app(served, max_body_bytes=1024))

    def chunks(size: int) -> Iterator[bytes]:
        body = flag_body(size)
        yield from (body[i : i + 100] for i in range(0, len(body), 100))

    over = client.post("/api/flags", content=chunks(1025), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in over.request.headers}
    assert over.status_code == 413, over.text
    assert (
        client.post("/api/flags", content=chunks(1024), headers={"content-type": "application/json"}).status_code == 200
    )


def test_the_default_limit_fits_a_flag_and_refuses_less_than_1_kb(served: Path) -> None:
    assert DEFAULT_MAX_BODY_BYTES == 16 * 1024
    client = TestClient(create_app(served))
    assert client.post("/api/flags", content=flag_body(DEFAULT_MAX_BODY_BYTES + 1)).status_code == 413
    with pytest.raises(ValueError, match="max_body_bytes: 1023 must be >= 1024"):
        create_app(served, max_body_bytes=1023)


# -- 50 MB to a real server ------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_50_mb_post_to_flags_is_refused_before_it_is_read(served: Path, framing: str) -> None:
    start = b"POST /api/flags HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if framing == "content-length":
        head = start + f"Content-Length: {FIFTY_MB}\r\n\r\n".encode()
        chunks = (b" " * CHUNK for _ in range(FIFTY_MB // CHUNK))
    else:
        head = start + b"Transfer-Encoding: chunked\r\n\r\n"
        chunks = (f"{CHUNK:x}\r\n".encode() + b" " * CHUNK + b"\r\n" for _ in range(FIFTY_MB // CHUNK))
    with serve_in_thread(create_app(served)) as url:
        sent, answer = send_until_answered(url, head, chunks)
        assert httpx.get(f"{url}/health").status_code == 200  # the server is fine afterwards
    assert status_of(answer) == 413, answer[:300]
    assert b"--max-body-kb" in answer
    # Answered long before the 50 MB were sent: what went out is what the kernel's buffers hold.
    assert sent < FIFTY_MB // 2, sent


# -- cafe inspect serve --max-body-kb --------------------------------------------------------------


def test_cafe_inspect_serve_takes_max_body_kb(served: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "CAFE_INSPECTOR_TOKEN"}
    command = [str(CAFE), "inspect", "serve", str(served), "--port", str(port), "--max-body-kb", "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not come up: {process.communicate()[0]}") from None
                time.sleep(0.1)
        headers = {"content-type": "application/json"}
        over = httpx.post(f"{url}/api/flags", content=flag_body(1025), headers=headers)
        assert over.status_code == 413 and "1024 bytes" in over.json()["detail"], over.text
        assert httpx.post(f"{url}/api/flags", content=flag_body(1024), headers=headers).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert flagged_keys(served / "real") == {REAL_KEYS[0]}

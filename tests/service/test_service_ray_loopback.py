"""Ray is never an open door: every Ray cafe starts listens on loopback only, and a Ray with token
authentication refuses a client without the token.

`cafe serve` starts its own Ray (for the launch tasks) and its build-data job starts another (the data
engine's); while the job runs, every listening socket of the service's and the job's process trees is
sampled.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from service_helpers import ServeProcess, client, job_state

from cafe_core.local_ray import EXPOSE_VARIABLE, LOOPBACK_VARIABLE

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def listening(*roots: int | None) -> dict[tuple[str, int], str]:
    """(address, port) -> command of every listening socket of the `roots` processes and their descendants."""
    pids = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            pids.update({p.pid: p for p in (root, *root.children(recursive=True))})
        except (psutil.NoSuchProcess, TypeError):  # gone, or no pid yet
            continue
    found = {}
    for connection in psutil.net_connections(kind="inet"):
        if connection.status == psutil.CONN_LISTEN and connection.pid in pids:
            try:
                name = " ".join(pids[connection.pid].cmdline()[:3])
            except psutil.NoSuchProcess:
                continue
            found[(connection.laddr.ip, connection.laddr.port)] = name
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_the_service_and_its_jobs_listen_on_loopback_only(data_root: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", EXPOSE_VARIABLE, "RAY_ADDRESS")}
    serve = ServeProcess(
        db=tmp_path / "state" / "service.db", roots=[data_root], slots=1, log_path=tmp_path / "serve.log", env=env
    )
    seen: dict[tuple[str, int], str] = {}
    try:
        with client(serve.url) as http:
            spec = {"kind": "build-data", "input": "photos", "output": "out/loopback", "preset": "tiny"}
            response = http.post("/jobs", json=spec)
            assert response.status_code == 201, response.text
            job_id = response.json()["id"]
            deadline = time.monotonic() + 420
            while time.monotonic() < deadline:
                job = job_state(http, job_id)
                # the job's process is detached from the service (its wrapper forks away): both trees
                seen.update(listening(serve.process.pid, job["pid"]))
                if job["state"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.5)
            assert job["state"] == "succeeded", (job, http.get(f"/jobs/{job_id}/logs").text[-3000:])
    finally:
        serve.stop()
    names = " | ".join(seen.values())
    assert "gcs_server" in names and "raylet" in names, f"no Ray was seen running: {seen}"
    # the service's Ray and the job's own Ray: two GCS servers
    assert sum("gcs_server" in name for name in seen.values()) >= 2, seen
    open_doors = {address: name for address, name in seen.items() if not is_loopback(address[0])}
    assert not open_doors, f"listening beyond loopback: {open_doors}"


HEAD = """
import sys, ray
from cafe_core.local_ray import prepare_local_ray
prepare_local_ray()
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes it; the driver's exit ends its Ray
"""

CONNECT = """
import sys, ray
try:
    ray.init(address=sys.argv[1], log_to_driver=False)
    print("connected", ray.get(ray.put(1)))
except Exception as exc:
    print("refused", type(exc).__name__, str(exc)[:300].replace(chr(10), " "))
"""


def test_a_ray_with_a_token_refuses_a_client_without_it() -> None:
    token = "cafe-test-token-" + os.urandom(8).hex()
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD],
        env={**base, "RAY_AUTH_TOKEN": token},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        address = head.stdout.readline().strip()
        assert address, "the head Ray did not start"
        outcomes = {}
        for name, extra in {
            "no auth": {"RAY_AUTH_MODE": "disabled"},
            "wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
            "the token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
        }.items():
            try:
                result = subprocess.run(
                    [sys.executable, "-c", CONNECT, address],
                    env={**base, LOOPBACK_VARIABLE: "0", **extra},  # a client on this host, as cafe's own are
                    capture_output=True,
                    text=True,
                    timeout=45,
                )
            except subprocess.TimeoutExpired:  # a refused client retries until it gives up: no answer is no entry
                outcomes[name] = "refused: no answer in 45 s"
                continue
            lines = result.stdout.strip().splitlines()
            outcomes[name] = lines[-1] if lines else f"exit {result.returncode}: {result.stderr[-300:]}"
        assert outcomes["the token"].startswith("connected"), outcomes
        assert not outcomes["no auth"].startswith("connected"), outcomes
        assert not outcomes["wrong token"].startswith("connected"), outcomes
    finally:
        head.stdin.close()
        head.wait(timeout=60)

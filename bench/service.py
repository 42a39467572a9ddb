"""Training service benchmark: submit-to-running through the API against a direct Ray launch, and GET /jobs.

Run from the repository root:

    .venv/bin/python bench/service.py                  # 5 submissions each way, 1,000 stored jobs, ~1 minute
    .venv/bin/python bench/service.py --repeats 2      # quicker
    make bench                                         # every bench/*.py, this one included

What it measures, on a local Ray (2 CPUs) and a real server on 127.0.0.1:
- submit to running: the time from `POST /jobs` (a tiny build-data spec) until `GET /jobs/{id}` shows the
  job running with its pid, polled every 20 ms; against the same job started directly, without the
  service: the zero-CPU Ray task that starts the job wrapper (`cafe_service.launch.start_wrapper`),
  timed until it returns the pid. The difference is what the service adds: validation, the SQLite
  record, the queue, the runner's claim. Each job is cancelled (SIGTERM) as soon as it is running.
  Ray's Jobs API (JobSubmissionClient) is not the baseline: it needs Ray's dashboard, not installed.
- GET /jobs with 1,000 jobs stored: requests/s of the default page (50 jobs, newest first) and of a
  filtered page (`?state=failed&kind=train`), one client after another and 8 at once.

Readable figures come first; the `name value` lines are printed last. `submit_to_running_api_vs_direct`
is the API's median latency over the direct launch's (1 = the service adds nothing).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "service"))
from service_helpers import TOKEN, client, service_in_thread  # noqa: E402

from cafe_core.local_ray import prepare_local_ray  # noqa: E402
from cafe_service import ServiceSettings  # noqa: E402
from cafe_service.store import FAILED, SUCCEEDED, JobStore  # noqa: E402

STORED_JOBS = 1000
POLL_S = 0.02


def write_inputs(root: Path) -> None:
    from PIL import Image

    (root / "photos").mkdir(parents=True)
    Image.new("RGB", (64, 64), (120, 80, 40)).save(root / "photos" / "one.jpg")


def wait_until(predicate, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(POLL_S)
    return value


def api_latencies(http: httpx.Client, repeats: int) -> list[float]:
    latencies = []
    for index in range(repeats):
        spec = {"kind": "build-data", "input": "photos", "output": f"out/api-{index}", "preset": "tiny"}
        began = time.perf_counter()
        job = http.post("/jobs", json=spec).json()
        wait_until(lambda j=job: http.get(f"/jobs/{j['id']}").json()["pid"])
        latencies.append(time.perf_counter() - began)
        http.post(f"/jobs/{job['id']}/cancel")
        wait_until(lambda j=job: http.get(f"/jobs/{j['id']}").json()["state"] == "cancelled", timeout_s=60)
    return latencies


def direct_latencies(root: Path, work: Path, repeats: int) -> list[float]:
    import ray

    from cafe_service.launch import start_wrapper

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    latencies = []
    for index in range(repeats):
        job_dir = work / f"direct-{index}"
        job_dir.mkdir(parents=True)
        args = ["data", "build", "--input", str(root / "photos"), "--output", str(root / f"out/direct-{index}")]
        began = time.perf_counter()
        record = ray.get(start_wrapper.remote(str(job_dir), [*args, "--preset", "tiny"], env, {}))
        latencies.append(time.perf_counter() - began)
        os.killpg(record["pid"], signal.SIGTERM)
        wait_until(lambda d=job_dir: (d / "exit.json").exists(), timeout_s=60)
    return latencies


def store_jobs(db: Path, jobs_dir: Path, count: int) -> None:
    store = JobStore(db)
    for index in range(count):
        kind = ("build-data", "train", "eval")[index % 3]
        spec = {"kind": kind, "input": f"in/{index}", "output": f"out/{index}", "preset": "tiny"}
        job = store.add_job(
            kind=kind, spec=spec, command_for=lambda d: ["cafe", "data", "build", str(d)], jobs_dir=jobs_dir, now=index
        )
        store.claim(job.id, index + 1.0)
        state = FAILED if index % 7 == 0 else SUCCEEDED
        store.finish(job.id, state, "exit code 1: boom" if state == FAILED else None, exit_code=0, now=index + 2.0)
    store.close()


def requests_per_s(url: str, params: dict, *, clients: int, duration_s: float) -> float:
    stop = time.monotonic() + duration_s
    counts = [0] * clients

    def run(slot: int) -> None:
        with client(url) as http:
            while time.monotonic() < stop:
                response = http.get("/jobs", params=params)
                assert response.status_code == 200
                counts[slot] += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="submissions timed each way")
    parser.add_argument("--duration-s", type=float, default=3.0, help="seconds per requests/s figure")
    options = parser.parse_args()

    os.environ.pop("RAY_ADDRESS", None)
    prepare_local_ray()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="cafe-bench-service-") as tmp:
        base = Path(tmp)
        root = base / "root"
        write_inputs(root)
        os.environ["CAFE_MODEL_CACHE"] = str(base / "models")
        settings = ServiceSettings(
            db_path=base / "latency" / "service.db", token=TOKEN, roots=[root], slots=1, poll_s=0.05, cancel_grace_s=2
        )
        with service_in_thread(settings) as (url, _), client(url) as http:
            api_latencies(http, 1)  # warm: the Ray worker, imports
            api = api_latencies(http, options.repeats)
        direct_latencies(root, base / "direct-warm", 1)
        direct = direct_latencies(root, base / "direct", options.repeats)

        db = base / "listing" / "service.db"
        began = time.perf_counter()
        store_jobs(db, base / "listing" / "jobs", STORED_JOBS)
        store_s = time.perf_counter() - began
        settings = ServiceSettings(db_path=db, token=TOKEN, roots=[root], slots=1)
        with service_in_thread(settings) as (url, _):
            page = {"limit": 50}
            filtered = {"state": "failed", "kind": "train", "limit": 50}
            with client(url) as http:
                listed = http.get("/jobs", params=page).json()
                assert listed["total"] == STORED_JOBS and len(listed["jobs"]) == 50
            rates = {
                "page_1_client": requests_per_s(url, page, clients=1, duration_s=options.duration_s),
                "page_8_clients": requests_per_s(url, page, clients=8, duration_s=options.duration_s),
                "filtered_1_client": requests_per_s(url, filtered, clients=1, duration_s=options.duration_s),
            }
    ray.shutdown()

    api_s, direct_s = statistics.median(api), statistics.median(direct)
    print(f"submit to running, through the API: median {api_s * 1000:.0f} ms of {len(api)} "
          f"({', '.join(f'{s * 1000:.0f}' for s in api)} ms)")  # fmt: skip
    print(f"submit to running, direct Ray launch: median {direct_s * 1000:.0f} ms of {len(direct)} "
          f"({', '.join(f'{s * 1000:.0f}' for s in direct)} ms)")  # fmt: skip
    print(f"{STORED_JOBS} jobs stored in {store_s:.1f} s")
    for name, rate in rates.items():
        print(f"GET /jobs ({name.replace('_', ' ')}): {rate:.0f} requests/s")
    print(f"submit_to_running_api_vs_direct {api_s / direct_s:.2f}")
    print(f"get_jobs_1000_stored_requests_per_s {rates['page_1_client']:.0f}")
    print(f"get_jobs_1000_stored_8_clients_requests_per_s {rates['page_8_clients']:.0f}")


if __name__ == "__main__":
    main()

"""Shard browser benchmark: the first page of a 100,000-sample set, against reading the same triples.

Run from the repository root:

    .venv/bin/python bench/inspector.py                 # 100,000 samples, about a minute on 2 cores
    .venv/bin/python bench/inspector.py --quick         # 10,000 samples, a few seconds
    make bench                                          # every bench/*.py, this one included

What it measures (each case on a fresh app, so every cache starts empty; best of a few repeats):
- first page: what the page asks for when a set opens: `GET /api/samples?limit=24` (the
  JSON of 24 cards, their prompts read from the tar) and the 48 thumbnails the cards show
  (reference and target-with-mask-outline, 256 px), over real HTTP from a uvicorn server on
  127.0.0.1. Timed with the requests one after another, and with 6 at a time as a browser does.
- the same 24 triples read with `cafe_core.TripleReader` from the start of the set (decoded,
  no thumbnails): what a script without the browser's random access would do.
- a page in the middle of the set (position 50,000): the browser bisects the index and reads
  one shard; the reader must decode every triple before it (measured once).
- a filtered first page (subject and score range), which reads stats.json files until 25 match,
  and the count of that filter over the whole set (a separate request the page makes after).

Readable figures come first; the `name value` lines are printed last. `*_vs_reader` is the
reader's time over the browser's (> 1: the browser is faster); `first_page_vs_target` is the
first page's time over the 500 ms target (< 1 meets it).
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from cafe_core import EncodedSample, InputStatus, ShardSet, TripleReader, make_key
from cafe_core.triple import METADATA, encode_metadata
from cafe_inspector import create_app

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests/ is not a package; its factories build tiny triples
sys.path.insert(0, str(REPO_ROOT / "tests" / "inspector"))
from factories import make_triple  # noqa: E402
from live_server import serve_in_thread  # noqa: E402

TARGET_S = 0.5
PAGE_SAMPLES = 24
THUMB_KINDS = ("reference", "overlay")  # what a card shows
THUMB_PX = 256
BROWSER_CONNECTIONS = 6  # what a browser opens per host over HTTP/1.1
SUBJECTS = ("red cube", "blue mug", "green dog", "yellow bird", "white teapot")


def build_set(root: Path, num_samples: int, num_distinct: int, size_px: tuple[int, int]) -> tuple[float, int]:
    """A closed set of `num_samples` samples in shards of 1000; returns (seconds, bytes on disk).

    Encoding images is slow and not what is measured: `num_distinct` triples are encoded once
    and their image members reused under new keys; each sample gets its own json (subject,
    scores, input key), so filters have something to find. One input in 50 is skipped.
    """
    start = time.perf_counter()
    bases = [make_triple(i, size=size_px) for i in range(num_distinct)]
    encoded = [(t.encode(), t.metadata) for t in bases]
    with ShardSet(root).writer(mode="overwrite", max_samples=1000, fsync=False) as writer:
        for i in range(num_samples):
            members, base = encoded[i % len(encoded)]
            input_key = f"bench/{i:07d}.jpg"
            subject = SUBJECTS[i % len(SUBJECTS)]
            metadata = {
                **base,
                "subject": subject,
                "scores": {"box": (i * 37 % 100) / 100, "mask_iou": 0.5 + (i * 11 % 50) / 100},
                "source": {**base["source"], "uri": f"file:///{input_key}", "input_key": input_key},
            }
            prompt = f"a photo of {subject} on a noisy table".encode()
            sample = EncodedSample(
                make_key(input_key), {**members, "prompt.txt": prompt, METADATA: encode_metadata(metadata)}, metadata
            )
            writer.add_encoded(InputStatus.ok(input_key), [sample])
            if i % 50 == 49:
                writer.add_encoded(InputStatus(f"bench/{i:07d}-bad.jpg", "skipped", reason="decode.truncated"), [])
    num_bytes = sum(p.stat().st_size for p in root.iterdir())
    return time.perf_counter() - start, num_bytes


def fetch_page(url: str, query: str, connections: int) -> tuple[float, float, int]:
    """(seconds for the whole page, seconds for its JSON alone, bytes of thumbnails) from a cold app."""
    with httpx.Client(base_url=url, timeout=60) as client:
        start = time.perf_counter()
        response = client.get(f"/api/samples?set=.&limit={PAGE_SAMPLES}&{query}")
        response.raise_for_status()
        json_s = time.perf_counter() - start
        items = response.json()["items"]
        if len(items) != PAGE_SAMPLES or any(i.get("problem") for i in items):
            raise RuntimeError(f"the page came back with {len(items)} cards (or unreadable ones): {query!r}")
        urls = [
            f"/api/image?set=.&key={item['key']}&kind={kind}&size={THUMB_PX}" for item in items for kind in THUMB_KINDS
        ]

        def get(path: str) -> int:
            image = client.get(path)
            image.raise_for_status()
            return len(image.content)

        if connections == 1:
            sizes = [get(path) for path in urls]
        else:
            with ThreadPoolExecutor(connections) as pool:
                sizes = list(pool.map(get, urls))
        return time.perf_counter() - start, json_s, sum(sizes)


def best_page(root: Path, query: str, connections: int, repeats: int) -> tuple[float, float, int]:
    """Best (page s, json s, thumbnail bytes), each repeat on a fresh app: every cache cold."""
    best: tuple[float, float, int] | None = None
    for _ in range(repeats):
        with serve_in_thread(create_app(root)) as url:
            result = fetch_page(url, query, connections)
        best = result if best is None or result[0] < best[0] else best
    assert best is not None
    return best


def show(kind: str, label: str, seconds: float, note: str = "") -> None:
    print(f"{kind:<10} {label:<62} {seconds * 1e3:8.1f} ms" + (f"  ({note})" if note else ""))


def best_count(root: Path, query: str, repeats: int) -> tuple[float, int]:
    """Best seconds of `/api/samples/count` on a fresh app (every stats.json read cold), and the count."""
    best, total = float("inf"), 0
    for _ in range(repeats):
        with serve_in_thread(create_app(root)) as url:
            start = time.perf_counter()
            response = httpx.get(f"{url}/api/samples/count?set=.&{query}", timeout=60)
            best = min(best, time.perf_counter() - start)
        response.raise_for_status()
        total = response.json()["total"]
    return best, total


def best_of(repeats: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def read_with_reader(root: Path, skip: int, count: int) -> None:
    got = list(itertools.islice(TripleReader(root, on_error="raise"), skip, skip + count))
    if len(got) != count:
        raise RuntimeError(f"TripleReader gave {len(got)} triples, expected {count}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10,000 samples instead of 100,000")
    parser.add_argument("--samples", type=int, help="samples in the set (default 100000, --quick 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 2 * PAGE_SAMPLES:
        parser.error(f"--samples must be >= {2 * PAGE_SAMPLES}, got {args.samples}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    num_samples = args.samples or (10_000 if args.quick else 100_000)
    size_px = (128, 96)
    ratios: dict[str, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix="cafe-bench-inspector-"))
    try:
        root = scratch / "set"
        built_s, num_bytes = build_set(root, num_samples, 300, size_px)
        print(
            f"set: {num_samples} samples (300 distinct {size_px[0]}x{size_px[1]} triples reused) in "
            f"{-(-num_samples // 1000)} shards, {num_bytes / 1e9:.2f} GB, built in {built_s:.1f} s; scratch {scratch}"
        )
        print(f"each case: best of {args.repeats}, a fresh app per run (cold caches; the OS page cache is warm)")

        startup_s = best_of(args.repeats, lambda: create_app(root))
        show("start-up", "create_app (nothing read or decoded)", startup_s)

        page_s, json_s, thumb_bytes = best_page(root, "", 1, args.repeats)
        page6_s, _, _ = best_page(root, "", BROWSER_CONNECTIONS, args.repeats)
        num_thumbs = PAGE_SAMPLES * len(THUMB_KINDS)
        show("first page", f"JSON of {PAGE_SAMPLES} cards (prompts read from the tar)", json_s)
        show(
            "first page",
            f"JSON + {num_thumbs} thumbnails, one request at a time",
            page_s,
            f"{thumb_bytes / 1e3:.0f} KB of thumbnails",
        )
        show("first page", f"the same, {BROWSER_CONNECTIONS} requests at a time (as a browser)", page6_s)
        reader_s = best_of(args.repeats, lambda: read_with_reader(root, 0, PAGE_SAMPLES))
        show("reader", f"TripleReader, first {PAGE_SAMPLES} triples decoded (no thumbnails)", reader_s)

        middle = num_samples // 2
        middle_s, _, _ = best_page(root, f"offset={middle}", 1, args.repeats)
        show("middle", f"page at position {middle}, JSON + thumbnails", middle_s)
        reader_middle_s = best_of(1, lambda: read_with_reader(root, middle, PAGE_SAMPLES))
        show("reader", f"TripleReader to triples {middle}.. (decodes all before)", reader_middle_s, "once")

        filter_query = "subject=mug&score=box:0.9:"
        filtered_s, _, _ = best_page(root, filter_query, 1, args.repeats)
        show("filtered", "first page of subject~mug, box >= 0.9, JSON + thumbnails", filtered_s)
        count_s, total = best_count(root, filter_query, args.repeats)
        show("filtered", f"count of that filter over the whole set ({total} matches)", count_s)
        verdict = "meets" if page_s < TARGET_S else "MISSES"
        print(f"target     first page under {TARGET_S * 1e3:.0f} ms: {verdict} it ({page_s * 1e3:.0f} ms, sequential)")

        ratios["inspector_first_page_ms"] = page_s * 1e3
        ratios["inspector_first_page_vs_target"] = page_s / TARGET_S
        ratios["inspector_first_page_vs_reader"] = reader_s / page_s
        ratios["inspector_first_page_json_vs_reader"] = reader_s / json_s
        ratios["inspector_middle_page_vs_reader"] = reader_middle_s / middle_s
        ratios["inspector_filtered_page_vs_target"] = filtered_s / TARGET_S
        ratios["inspector_filter_count_s"] = count_s
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    for name, value in ratios.items():
        print(f"{name} {value:.2f}")


if __name__ == "__main__":
    main()

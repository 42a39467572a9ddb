"""Shard IO benchmark: cafe_core's writer and reader against tarfile and webdataset, side by side.

Run from the repository root:

    .venv/bin/python bench/shard_io.py              # full run, 1-2 minutes on 2 cores
    .venv/bin/python bench/shard_io.py --quick      # smaller run, under 20 s
    .venv/bin/python bench/shard_io.py --samples 5000
    make bench                                      # the full run

What it measures (every pair in the same run, interleaved, best of a few repeats per side):
- write: `ShardWriter.add_encoded` (pre-encoded samples, one `InputStatus.ok` row per input,
  status parquet, stats.json, index and dataset.json included) against `tarfile` and
  `webdataset.TarWriter` writing the same member names and sizes into the same number of tars.
- read + decode: `TripleReader` against `webdataset.WebDataset(...).decode("pil")`, and against
  webdataset with a handler doing exactly TripleReader's image work ("pil" also converts to RGB).
- raw read: `cafe_core.reader.iter_samples` against `tarfile` member reads (and plain
  `webdataset.WebDataset` without decode).
- `cafe shards stats` on a 10,000-sample set (the CLI as a subprocess when it exists).

Human-readable lines come first; the ratio lines (`name value`, ours / theirs for throughput,
so > 1 means cafe_core is faster) are the last thing printed.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds
from PIL import Image

from cafe_core import EncodedSample, InputStatus, ShardSet, TripleReader, make_key
from cafe_core.reader import iter_samples
from cafe_core.stats import shard_set_stats
from cafe_core.triple import MEMBERS, METADATA, encode_metadata

REPO_ROOT = Path(__file__).resolve().parents[1]
STATS_TARGET_S = 2.0
STATS_SET_SAMPLES = 10_000  # the target is stated for this size, so --quick keeps it
MB = 1e6


@dataclass(frozen=True)
class Corpus:
    """Pre-encoded samples and their status rows, in write order."""

    samples: list[EncodedSample]
    statuses: list[InputStatus]
    size_px: tuple[int, int]
    num_distinct: int

    @property
    def payload_bytes(self) -> int:
        return sum(s.num_bytes for s in self.samples)


def make_corpus(num_samples: int, num_distinct: int, size_px: tuple[int, int]) -> Corpus:
    """`num_samples` samples with unique keys and valid json, built from `num_distinct` encoded triples.

    Encoding images is the slow part and not what is measured, so a few hundred distinct
    triples are encoded once and their image members reused under new keys; only the json
    is re-encoded per key, so that each sample's `source.input_key` names its own input.
    """
    # tests/ is not a package; its factories are the project's one way to build tiny triples.
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from factories import make_triple

    bases = [make_triple(i, size=size_px) for i in range(min(num_distinct, num_samples))]
    encoded = [(t.encode(), t.metadata) for t in bases]
    samples, statuses = [], []
    for i in range(num_samples):
        members, base_meta = encoded[i % len(encoded)]
        input_key = f"bench-{i}"
        source = {**base_meta["source"], "uri": f"file:///inputs/{input_key}", "input_key": input_key}
        metadata = {**base_meta, "source": source}
        key = make_key(input_key)
        samples.append(EncodedSample(key, {**members, METADATA: encode_metadata(metadata)}, metadata))
        statuses.append(InputStatus.ok(input_key))
    return Corpus(samples, statuses, size_px, len(encoded))


def shard_chunks(samples: Sequence[EncodedSample], shard_samples: int) -> Iterator[Sequence[EncodedSample]]:
    # The baselines get the same split into tars that ShardWriter's max_samples produces.
    for start in range(0, len(samples), shard_samples):
        yield samples[start : start + shard_samples]


# -- writers ----------------------------------------------------------------------------------


def write_ours(corpus: Corpus, out: Path, shard_samples: int, fsync: bool) -> None:
    # The one-process path a job uses: prepare, add inputs, close (index + dataset.json).
    with ShardSet(out).writer(mode="overwrite", max_samples=shard_samples, fsync=fsync) as writer:
        for status, sample in zip(corpus.statuses, corpus.samples, strict=True):
            writer.add_encoded(status, [sample])


def write_tarfile(corpus: Corpus, out: Path, shard_samples: int) -> None:
    out.mkdir(parents=True)
    for number, chunk in enumerate(shard_chunks(corpus.samples, shard_samples)):
        # USTAR like ours; for these short names PAX (the default) writes the same blocks anyway.
        with tarfile.open(out / f"shard-{number:06d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in chunk:
                for suffix in MEMBERS:
                    data = sample.members[suffix]
                    info = tarfile.TarInfo(f"{sample.key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def write_wds(corpus: Corpus, out: Path, shard_samples: int) -> None:
    out.mkdir(parents=True)
    for number, chunk in enumerate(shard_chunks(corpus.samples, shard_samples)):
        # encoder=False: the members are bytes already, as they are for ours.
        with wds.TarWriter(str(out / f"shard-{number:06d}.tar"), encoder=False) as writer:
            for sample in chunk:
                writer.write({"__key__": sample.key, **sample.members})


# -- readers ----------------------------------------------------------------------------------


def read_decode_ours(paths: Sequence[Path]) -> int:
    # on_error="raise": a sample silently skipped would make ours look faster than it is.
    return sum(1 for _ in TripleReader(paths, on_error="raise"))


def read_decode_wds(paths: Sequence[Path]) -> int:
    # "pil" opens each image, calls .load() and then .convert("RGB"): the same full decode as
    # ours plus a mode conversion (a copy for the RGB target, RGBA->RGB and L->RGB for the
    # reference and mask). json and txt are decoded by its default handlers.
    dataset = wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode("pil")
    count = 0
    for sample in dataset:
        count += 1
        if count == 1:
            check_wds_sample(sample)
    return count


def pil_load_only(key: str, data: bytes) -> Image.Image | None:
    """A webdataset image handler doing exactly what TripleReader does: open, load, keep the mode."""
    if not key.endswith((".jpg", ".png")):
        return None  # json and txt fall through to webdataset's default handlers
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def read_decode_wds_noconvert(paths: Sequence[Path]) -> int:
    dataset = wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode(pil_load_only)
    count = 0
    for sample in dataset:
        count += 1
        if count == 1:
            check_wds_sample(sample)
    return count


def check_wds_sample(sample: dict) -> None:
    """Fail loudly if webdataset did less work than ours (images left undecoded, bytes left raw)."""
    for suffix in ("target.jpg", "reference.png", "mask.png"):
        if not isinstance(sample[suffix], Image.Image):
            raise RuntimeError(f"webdataset left {suffix} as {type(sample[suffix]).__name__}, not a decoded image")
    if not isinstance(sample["json"], dict) or not isinstance(sample["prompt.txt"], str):
        raise RuntimeError("webdataset did not decode json and txt")


def read_raw_ours(paths: Sequence[Path]) -> int:
    count = 0
    for path in paths:
        for _key, members in iter_samples(path):
            count += len(members)
    return count


def read_raw_tarfile(paths: Sequence[Path]) -> int:
    count = 0
    for path in paths:
        with tarfile.open(path) as tar:
            for info in tar:
                if info.isfile():
                    tar.extractfile(info).read()
                    count += 1
    return count


def read_raw_wds(paths: Sequence[Path]) -> int:
    # Without .decode() webdataset yields each sample's members as bytes, grouped by key.
    dataset = wds.WebDataset([str(p) for p in paths], shardshuffle=False)
    return sum(len(MEMBERS) for sample in dataset if all(isinstance(sample[m], bytes) for m in MEMBERS))


# -- timing -----------------------------------------------------------------------------------


def best_times_write(cases: dict[str, Callable[[Path], None]], scratch: Path, repeats: int) -> dict[str, float]:
    """Min wall time per case, runs interleaved (a, b, c, a, b, c, ...) with the order rotated.

    Each run writes into a fresh folder; the os.sync before it (untimed) flushes the previous
    run's dirty pages, so one side's writeback does not land in the other side's timing.
    """
    best = {name: float("inf") for name in cases}
    names = list(cases)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            out = scratch / f"{name}-{rep}"
            os.sync()
            start = time.perf_counter()
            cases[name](out)
            best[name] = min(best[name], time.perf_counter() - start)
            shutil.rmtree(out)
    return best


def best_times_read(cases: dict[str, Callable[[], int]], expected: dict[str, int], repeats: int) -> dict[str, float]:
    """Min wall time per case, interleaved and rotated; checks each case saw everything."""
    best = {name: float("inf") for name in cases}
    names = list(cases)
    for rep in range(repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            start = time.perf_counter()
            count = cases[name]()
            best[name] = min(best[name], time.perf_counter() - start)
            if count != expected[name]:
                raise RuntimeError(f"{name}: read {count} items, expected {expected[name]}")
    return best


def throughput_line(kind: str, label: str, seconds: float, num_bytes: int, num_samples: int, repeats: int) -> str:
    return (
        f"{kind:<12} {label:<44} {num_bytes / MB / seconds:8.1f} MB/s {num_samples / seconds:9.0f} samples/s"
        f"   (best {seconds:.3f} s of {repeats})"
    )


# -- stats ------------------------------------------------------------------------------------


def cafe_cli() -> Path | None:
    """The `cafe` command beside this interpreter, if `cafe shards stats --help` works yet."""
    candidate = Path(sys.executable).parent / "cafe"
    if not candidate.exists():
        return None
    probe = subprocess.run(
        [str(candidate), "shards", "stats", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return candidate if probe.returncode == 0 else None


def time_stats(root: Path, repeats: int) -> tuple[float, str, float]:
    """(best seconds, how it was timed, best in-process seconds) of stats over the set in `root`."""
    in_process = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        shard_set_stats(root)
        in_process = min(in_process, time.perf_counter() - start)
    cli = cafe_cli()
    if cli is None:
        return (
            in_process,
            "in-process cafe_core.stats.shard_set_stats (`cafe shards stats` not available yet)",
            in_process,
        )
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([str(cli), "shards", "stats", str(root)], capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"`cafe shards stats {root}` failed ({done.returncode}): {done.stderr.strip()}")
        best = min(best, elapsed)
    return (
        best,
        f"subprocess `{cli.relative_to(REPO_ROOT) if cli.is_relative_to(REPO_ROOT) else cli} shards stats`",
        in_process,
    )


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run (under 20 s)")
    parser.add_argument("--samples", type=int, help="samples in the throughput set (default 3000, --quick 300)")
    parser.add_argument("--repeats", type=int, help="timed runs per side (default 5)")
    args = parser.parse_args(argv)
    if args.samples is not None and args.samples < 1:
        parser.error(f"--samples must be >= 1, got {args.samples}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    num_samples = args.samples or (300 if args.quick else 3000)
    repeats = args.repeats or 5
    # At least two shards per run, so the per-shard costs (parquet, stats.json, renames) are in the
    # figures, but no smaller than needed: real shards hold ~1000 samples, which dwarfs those costs.
    shard_samples = max(1, min(500, -(-num_samples // 2)))
    size_px = (256, 256)  # a ~58 KB target jpeg: tens of KB per sample, like real triples
    warnings.simplefilter("ignore", UserWarning)  # webdataset's advisory warnings would interleave with the report

    ratios: dict[str, float] = {}
    scratch = Path(tempfile.mkdtemp(prefix="cafe-bench-shard-io-"))
    try:
        corpus = make_corpus(num_samples, 200, size_px)
        payload = corpus.payload_bytes
        num_shards = -(-num_samples // shard_samples)
        print(
            f"set: {num_samples} samples ({corpus.num_distinct} distinct {size_px[0]}x{size_px[1]} triples reused), "
            f"{payload / num_samples / 1e3:.1f} KB/sample, {payload / MB:.1f} MB in {num_shards} shard(s) "
            f"of <= {shard_samples}; {repeats} interleaved runs per side, best kept; scratch {scratch}"
        )

        # -- write --
        writes = best_times_write(
            {
                "ours": lambda out: write_ours(corpus, out, shard_samples, fsync=False),
                "tarfile": lambda out: write_tarfile(corpus, out, shard_samples),
                "wds_tarwriter": lambda out: write_wds(corpus, out, shard_samples),
                "ours_fsync": lambda out: write_ours(corpus, out, shard_samples, fsync=True),
            },
            scratch,
            repeats,
        )
        labels = {
            "ours": "cafe_core ShardWriter fsync=False",
            "ours_fsync": "cafe_core ShardWriter fsync=True",
            "tarfile": "tarfile (no fsync)",
            "wds_tarwriter": "webdataset.TarWriter encoder=False (no fsync)",
        }
        for name, seconds in writes.items():
            print(throughput_line("write", labels[name], seconds, payload, num_samples, repeats))
        ratios["write_vs_tarfile"] = writes["tarfile"] / writes["ours"]
        ratios["write_vs_wds_tarwriter"] = writes["wds_tarwriter"] / writes["ours"]
        ratios["write_fsync_vs_tarfile"] = writes["tarfile"] / writes["ours_fsync"]

        # -- read --
        read_root = scratch / "read-set"
        write_ours(corpus, read_root, shard_samples, fsync=False)
        paths = sorted(read_root.glob("*.tar"))
        num_members = num_samples * len(MEMBERS)
        reads = best_times_read(
            {
                "ours_decode": lambda: read_decode_ours(paths),
                "wds_decode": lambda: read_decode_wds(paths),
                "wds_decode_noconvert": lambda: read_decode_wds_noconvert(paths),
                "ours_raw": lambda: read_raw_ours(paths),
                "tarfile_raw": lambda: read_raw_tarfile(paths),
                "wds_raw": lambda: read_raw_wds(paths),
            },
            {
                "ours_decode": num_samples,
                "wds_decode": num_samples,
                "wds_decode_noconvert": num_samples,
                "ours_raw": num_members,
                "tarfile_raw": num_members,
                "wds_raw": num_members,
            },
            repeats,
        )
        labels = {
            "ours_decode": "cafe_core TripleReader (decode + validate)",
            "wds_decode": 'webdataset .decode("pil")',
            "wds_decode_noconvert": "webdataset .decode(open + load, no convert)",
            "ours_raw": "cafe_core.reader.iter_samples (bytes)",
            "tarfile_raw": "tarfile members (bytes)",
            "wds_raw": "webdataset, no decode (bytes)",
        }
        for name, seconds in reads.items():
            kind = "read raw" if name.endswith("raw") else "read+decode"
            print(throughput_line(kind, labels[name], seconds, payload, num_samples, repeats))
        print(
            'note: webdataset "pil" also converts every image to RGB (a copy of the target, the reference loses '
            'its alpha, the mask becomes RGB); "no convert" is the same work as TripleReader minus its '
            "validation of each triple and its json"
        )
        ratios["read_decode_vs_wds"] = reads["wds_decode"] / reads["ours_decode"]
        ratios["read_decode_vs_wds_noconvert"] = reads["wds_decode_noconvert"] / reads["ours_decode"]
        ratios["read_raw_vs_tarfile"] = reads["tarfile_raw"] / reads["ours_raw"]
        ratios["read_raw_vs_wds"] = reads["wds_raw"] / reads["ours_raw"]

        # -- stats --
        stats_root = scratch / "stats-set"
        start = time.perf_counter()
        stats_corpus = make_corpus(STATS_SET_SAMPLES, 200, (64, 48))  # stats never opens a tar: size is irrelevant
        write_ours(stats_corpus, stats_root, 1000, fsync=False)
        built_s = time.perf_counter() - start
        stats_s, how, in_process_s = time_stats(stats_root, repeats)
        print(f"stats set: {STATS_SET_SAMPLES} samples in 10 shards, built in {built_s:.1f} s")
        print(f"stats      {how}: best {stats_s:.3f} s of {repeats} (in-process shard_set_stats {in_process_s:.3f} s)")
        ratios["stats_10k_s"] = stats_s
        ratios["stats_10k_vs_target"] = stats_s / STATS_TARGET_S
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print()
    for name, value in ratios.items():
        print(f"{name} {value:.2f}")


if __name__ == "__main__":
    main()

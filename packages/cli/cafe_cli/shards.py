"""`cafe shards ...`: look into shard sets. Imports cafe_core only, so it starts fast.

cafe shards ls DIR                 shards of a set, or the sets under a folder
cafe shards stats DIR [--json]     counts, reasons, rounds, score distributions
cafe shards show DIR KEY           one triple's metadata, and a PNG of it
cafe shards validate DIR [--fast]  check the data contract; exit 1 on problems
cafe shards grid DIR               a contact sheet PNG of random triples
cafe shards index DIR              rebuild shardindex.json from the tars
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cafe_cli.console import EXIT_PROBLEMS, fail, out, progress
from cafe_core.contact import contact_sheet, triple_panel
from cafe_core.index import build_index, write_index
from cafe_core.layout import SetLayout, detect_layout, find_prefixes
from cafe_core.lookup import random_keys, read_keys
from cafe_core.stats import shard_set_stats
from cafe_core.tario import TarCorruptError
from cafe_core.validate import validate_set

app = typer.Typer(help="Inspect, check and index shard sets.", no_args_is_help=True)

SetDir = Annotated[Path, typer.Argument(help="a shard-set folder", exists=True, file_okay=False, resolve_path=True)]
MAX_SET_SEARCH_DEPTH = 3


def _layout(root: Path) -> SetLayout:
    try:
        return detect_layout(root)
    except (FileNotFoundError, ValueError) as exc:
        fail(f"{exc}. `cafe shards ls {root}` lists the sets below a folder.")


def _human_bytes(num: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if num < 1024 or unit == "TB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1024
    return ""


def _find_sets(root: Path, depth: int = MAX_SET_SEARCH_DEPTH) -> list[Path]:
    if find_prefixes(root):
        return [root]
    if depth == 0:
        return []
    return [s for child in sorted(p for p in root.iterdir() if p.is_dir()) for s in _find_sets(child, depth - 1)]


@app.command("ls")
def ls(
    root: SetDir,
    keys: Annotated[bool, typer.Option("--keys", help="also list each shard's sample keys")] = False,
) -> None:
    """List the shards of a set, or the sets found below a folder."""
    if not find_prefixes(root):
        sets = _find_sets(root)
        if not sets:
            fail(f"{root}: no shard sets here or up to {MAX_SET_SEARCH_DEPTH} folders below")
        table = Table("set", "shards", "samples", "inputs", "size", "closed")
        for path in sets:
            stats = shard_set_stats(path)
            closed = "yes" if (path / "dataset.json").is_file() else "no"
            table.add_row(
                str(path.relative_to(root)) if path != root else ".",
                str(stats["num_shards"]),
                str(stats["num_samples"]),
                str(stats["num_inputs"]),
                _human_bytes(stats["num_bytes"]),
                closed,
            )
        out.print(table)
        return
    layout = _layout(root)
    done = set(layout.done_numbers())
    if keys:  # plain "shard key" lines, for scripts
        for number in sorted(done):
            for key in layout.read_stats(number)["samples"]["key"]:
                print(layout.shard_name(number), key)
        return
    table = Table("shard", "samples", "inputs", "ok", "skipped", "failed", "size", "state", title=str(root))
    for number in layout.existing_numbers():
        if number in done:
            stats = layout.read_stats(number)
            status = stats["status"]
            counts = [stats["nsamples"], stats["num_inputs"], status["ok"], status["skipped"], status["failed"]]
            cells = [str(c) for c in counts]
            table.add_row(layout.shard_name(number), *cells, _human_bytes(stats["filesize"]), "done")
        else:
            table.add_row(layout.shard_name(number), "", "", "", "", "", "", "[yellow]unfinished[/]")
    out.print(table)


def _sparkline(counts: list[int]) -> str:
    blocks = " ▁▂▃▄▅▆▇█"
    top = max(counts) or 1
    return "".join(blocks[round(c / top * (len(blocks) - 1))] for c in counts)


def _distribution_table(title: str, distributions: dict[str, Any]) -> Table:
    table = Table("name", "count", "mean", "min", "p05", "p50", "p95", "max", "histogram", title=title)
    table.columns[0].no_wrap = True
    table.columns[-1].no_wrap = True  # a wrapped sparkline reads as two rows
    for name, d in distributions.items():
        if d["count"] == 0:
            table.add_row(name, "0", *[""] * 7)
            continue
        numbers = [f"{d[k]:.3f}" for k in ("mean", "min", "p05", "p50", "p95", "max")]
        table.add_row(name, str(d["count"]), *numbers, _sparkline(d["histogram"]["counts"]))
    return table


@app.command()
def stats(
    root: SetDir,
    as_json: Annotated[bool, typer.Option("--json", help="print the stats as JSON")] = False,
) -> None:
    """Counts, bytes, totals per round and per status reason, score distributions.

    Reads the index and each shard's stats.json only; never opens a tar. Samples flagged as bad
    (flags.parquet, from `cafe inspect serve`) are counted but left out of rounds and scores.
    """
    _layout(root)
    result = shard_set_stats(root)
    if as_json:
        print(json.dumps(result, indent=1))
        return
    totals = Table(
        "set", "shards", "samples", "flagged", "inputs", "ok", "skipped", "failed", "size", "index", title=str(root)
    )
    status = result["status"]
    totals.add_row(
        result["prefix"],
        str(result["num_shards"]),
        str(result["num_samples"]),
        str(result["num_flagged"]),
        str(result["num_inputs"]),
        *(str(status[s]) for s in ("ok", "skipped", "failed")),
        _human_bytes(result["num_bytes"]),
        result["index"],
    )
    out.print(totals)
    left_out = f" ({result['num_flagged']} flagged left out)" if result["num_flagged"] else ""
    rounds = Table("round", "samples", title="samples per round" + left_out)
    for round_, count in result["rounds"].items():
        rounds.add_row(round_, str(count))
    out.print(rounds)
    if result["reasons"]:
        reasons = Table("status", "reason", "inputs", title="inputs per reason")
        for state, counts in result["reasons"].items():
            for reason, count in counts.items():
                reasons.add_row(state, reason, str(count))
        out.print(reasons)
    if result["subjects"]:
        subjects = Table("subject", "samples", title="top subjects")
        for subject, count in result["subjects"].items():
            subjects.add_row(subject, str(count))
        out.print(subjects)
    if result["scores"]:
        out.print(_distribution_table("scores", result["scores"]))
    if result["quality"]:
        out.print(_distribution_table("quality", result["quality"]))


@app.command()
def show(
    root: SetDir,
    key: Annotated[str, typer.Argument(help="the sample key (16 hex characters)")],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="PNG to write (default: KEY.png)")] = None,
) -> None:
    """Print one triple's metadata and write reference | mask | target side by side to a PNG."""
    layout = _layout(root)
    try:
        (triple,) = read_keys(layout, [key])
    except KeyError as exc:
        fail(str(exc.args[0]))
    out.print_json(json.dumps({"key": triple.key, "prompt": triple.prompt, **triple.metadata}))
    output = output or Path(f"{key}.png")
    triple_panel(triple).save(output)
    out.print(f"wrote {output}")


@app.command()
def validate(
    root: SetDir,
    fast: Annotated[bool, typer.Option("--fast", help="trust the index; check file sizes and md5 only")] = False,
    workers: Annotated[int, typer.Option(min=1, help="processes checking shards in parallel")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print the problems as JSON")] = False,
    max_shown: Annotated[int, typer.Option(min=0, help="problems listed in the table")] = 50,
) -> None:
    """Check a set against the data contract. Exit 0 when valid, 1 when problems are found."""
    layout = _layout(root)
    with progress() as bar:
        task = bar.add_task("validating" + (" (fast)" if fast else ""), total=len(layout.done_numbers()))
        report = validate_set(root, fast=fast, workers=workers, on_shard=lambda _: bar.advance(task))
    if as_json:
        problems = [{"code": p.code, "shard": p.shard, "key": p.key, "message": p.message} for p in report.problems]
        summary = {"ok": report.ok, "shards": report.num_shards, "samples": report.num_samples, "problems": problems}
        print(json.dumps(summary, indent=1))
    else:
        if report.problems:
            table = Table("code", "shard", "key", "message", title=f"{len(report.problems)} problem(s)")
            for problem in report.problems[:max_shown]:
                table.add_row(problem.code, problem.shard, problem.key, problem.message)
            out.print(table)
            if len(report.problems) > max_shown:
                out.print(f"... and {len(report.problems) - max_shown} more; --json lists all")
            out.print("by code: " + ", ".join(f"{c} {n}" for c, n in report.codes().items()))
        verdict = "[green]valid[/]" if report.ok else "[red]INVALID[/]"
        checked = f"{report.num_shards} shards, {report.num_samples} samples checked" + (" (fast)" if fast else "")
        out.print(f"{verdict}: {checked}")
    if not report.ok:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command()
def grid(
    root: SetDir,
    count: Annotated[int, typer.Option("--n", "-n", min=1, help="triples to show")] = 16,
    seed: Annotated[int, typer.Option(help="which random triples")] = 0,
    columns: Annotated[int, typer.Option(min=1)] = 4,
    output: Annotated[Path, typer.Option("--out", "-o", help="PNG to write")] = Path("grid.png"),
) -> None:
    """Write a contact sheet PNG of N random triples."""
    layout = _layout(root)
    keys = random_keys(layout, count, seed)
    if not keys:
        fail(f"{root}: the set has no samples to show")
    with progress() as bar:
        bar.add_task(f"reading {len(keys)} triples", total=None)
        triples = read_keys(layout, keys)
    contact_sheet(triples, columns=columns, title=f"{root.name}: {len(triples)} random triples (seed {seed})").save(
        output
    )
    out.print(f"wrote {output} ({len(triples)} triples)")


@app.command()
def index(
    root: SetDir,
    trust_stats: Annotated[
        bool, typer.Option("--trust-stats", help="take sizes and md5 from stats.json instead of rescanning the tars")
    ] = False,
) -> None:
    """Rebuild shardindex.json (wids layout) from the done shards of a set."""
    layout = _layout(root)
    numbers = layout.done_numbers()
    try:
        with progress() as bar:
            task = bar.add_task("indexing", total=len(numbers))
            built = build_index(layout, from_files=not trust_stats, on_shard=lambda _: bar.advance(task))
    except TarCorruptError as exc:
        fail(f"a shard does not scan: {exc}; `cafe shards validate {root}` lists the damage", EXIT_PROBLEMS)
    path = write_index(layout, built, pid=os.getpid())
    total = sum(e["nsamples"] for e in built["shardlist"])
    out.print(f"wrote {path}: {len(built['shardlist'])} shards, {total} samples")

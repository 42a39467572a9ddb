"""`cafe jobs ...`: submit jobs to the training service and follow them (see `cafe serve`).

    cafe jobs submit build.yaml                                   # a spec file: kind, input, output, preset, ...
    cafe jobs submit --kind train --set shards=[triples] --set output=runs/a --set preset=tiny \
        --set overrides.max_steps=200 --follow
    cafe jobs list [--state running] [--kind train] [--limit 20]
    cafe jobs show ID | logs ID [--follow] | cancel ID
    cafe jobs submit build.yaml --dry-run                         # the checked spec's command; nothing queued

Paths in a spec are the service's: inside its data roots, relative ones from its first root. Exit codes:
0 fine; 1 a job that failed or was cancelled (`submit --follow`, `logs --follow`), or no such job; 2 a
usage error (a refused spec, a bad option, the service unreachable or the token wrong).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cafe_cli.console import EXIT_PROBLEMS, fail, out
from cafe_cli.service_client import ServiceClient, TokenOption, UrlOption, short_command

app = typer.Typer(help="Submit jobs to the training service, list them, follow their logs.", no_args_is_help=True)

KINDS = ("build-data", "train", "improve-round", "loop", "eval")
STATES = ("queued", "running", "succeeded", "failed", "cancelled")
JsonOption = Annotated[bool, typer.Option("--json", help="print the service's JSON answer")]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_spec(spec_file: Path | None, kind: str | None, sets: list[str] | None) -> dict[str, Any]:
    """The spec to post: SPEC.yaml, then --kind, then --set KEY=VALUE (dotted keys nest; values are YAML)."""
    from cafe_core.settings import load_yaml, parse_sets

    try:
        spec = load_yaml(spec_file) if spec_file is not None else {}
        if kind is not None:
            spec["kind"] = kind
        spec = _merge(spec, parse_sets(sets or []))
    except ValueError as exc:
        fail(str(exc))
    if "kind" not in spec:
        fail(f"--kind: give the job's kind ({', '.join(KINDS)}), in SPEC.yaml or as --kind")
    return spec


def print_job(job: dict[str, Any]) -> None:
    table = Table(show_header=False, title=f"job {job['id']}")
    for name in ("kind", "state", "reason", "created_at", "started_at", "ended_at", "exit_code", "pid", "host"):
        if job.get(name) is not None:
            table.add_row(name, str(job[name]))
    table.add_row("command", short_command(job["command"], max_chars=400))
    table.add_row("job folder", job["job_dir"])
    if job.get("schedule_id") is not None:
        table.add_row("schedule", str(job["schedule_id"]))
    out.print(table)


def _exit_for(job: dict[str, Any]) -> None:
    if job["state"] != "succeeded":
        reason = f": {job['reason']}" if job.get("reason") else ""
        fail(f"job {job['id']} {job['state']}{reason}", EXIT_PROBLEMS)


@app.command()
def submit(
    spec_file: Annotated[
        Path | None, typer.Argument(help="a YAML (or JSON) spec: kind and its fields", exists=True, dir_okay=False)
    ] = None,
    kind: Annotated[str | None, typer.Option(help=f"the job's kind: {', '.join(KINDS)}")] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="KEY=VALUE of the spec, e.g. input=photos or overrides.max_steps=200 (repeatable)"),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="stream the log until the job ends")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check the spec and print its command; queue nothing")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = "http://127.0.0.1:8780",
    token: TokenOption = None,
) -> None:
    """Submit a job: a spec file, or --kind with --set fields. Prints its id; --follow streams its log."""
    spec = build_spec(spec_file, kind, sets)
    client = ServiceClient(url, token)
    if dry_run:
        checked = client.call("POST", "/jobs", params={"dry_run": "true"}, json=spec)
        if as_json:
            out.print_json(json.dumps(checked))
        else:
            out.print(short_command(checked["command"], max_chars=10_000), highlight=False)
        return
    job = client.call("POST", "/jobs", json=spec)
    if as_json and not follow:
        out.print_json(json.dumps(job))
        return
    out.print(f"job {job['id']} {job['state']}: {short_command(job['command'], max_chars=200)}", highlight=False)
    if follow:
        client.stream_log(job["id"], follow=True)
        final = client.call("GET", f"/jobs/{job['id']}")
        out.print(f"job {final['id']} {final['state']}" + (f": {final['reason']}" if final.get("reason") else ""))
        _exit_for(final)
    else:
        out.print(f"Next: cafe jobs logs {job['id']} --follow")


@app.command("list")
def list_jobs(
    state: Annotated[
        list[str] | None, typer.Option(help=f"only these states ({', '.join(STATES)}; repeatable)")
    ] = None,
    kind: Annotated[str | None, typer.Option(help=f"only this kind ({', '.join(KINDS)})")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="jobs per page, newest first")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="skip this many of the newest")] = 0,
    as_json: JsonOption = False,
    url: UrlOption = "http://127.0.0.1:8780",
    token: TokenOption = None,
) -> None:
    """The service's jobs, newest first."""
    params: dict[str, Any] = {"limit": limit, "offset": offset, "state": state or []}
    if kind is not None:
        params["kind"] = kind
    page = ServiceClient(url, token).call("GET", "/jobs", params=params)
    if as_json:
        out.print_json(json.dumps(page))
        return
    table = Table("id", "kind", "state", "created", "command", "reason", title=f"jobs ({page['total']} in all)")
    for job in page["jobs"]:
        table.add_row(
            str(job["id"]),
            job["kind"],
            job["state"],
            job["created_at"],
            short_command(job["command"], max_chars=60),
            (job.get("reason") or "")[:80],
        )
    out.print(table)
    shown = offset + len(page["jobs"])
    if shown < page["total"]:
        out.print(f"{page['total'] - shown} older: --offset {shown}")


@app.command()
def show(
    job_id: Annotated[int, typer.Argument(help="the job's id")],
    as_json: JsonOption = False,
    url: UrlOption = "http://127.0.0.1:8780",
    token: TokenOption = None,
) -> None:
    """One job: state, reason, command, process, times, and the files it wrote."""
    client = ServiceClient(url, token)
    job = client.call("GET", f"/jobs/{job_id}")
    artifacts = client.call("GET", f"/jobs/{job_id}/artifacts")
    if as_json:
        out.print_json(json.dumps({**job, "artifacts": artifacts}))
        return
    print_job(job)
    out.print(f"{artifacts['num_files']} files, {artifacts['total_bytes']} bytes under {artifacts['root']}")


@app.command()
def logs(
    job_id: Annotated[int, typer.Argument(help="the job's id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep streaming until the job ends")] = False,
    url: UrlOption = "http://127.0.0.1:8780",
    token: TokenOption = None,
) -> None:
    """A job's log; with --follow, until it ends (exit 1 when it failed or was cancelled)."""
    client = ServiceClient(url, token)
    client.stream_log(job_id, follow=follow)
    if follow:
        _exit_for(client.call("GET", f"/jobs/{job_id}"))


@app.command()
def cancel(
    job_id: Annotated[int, typer.Argument(help="the job's id")],
    url: UrlOption = "http://127.0.0.1:8780",
    token: TokenOption = None,
) -> None:
    """Cancel a job: a queued one at once; a running one gets SIGTERM, then SIGKILL after the grace."""
    job = ServiceClient(url, token).call("POST", f"/jobs/{job_id}/cancel")
    if job["state"] == "cancelled":
        out.print(f"job {job_id} cancelled")
    else:
        out.print(f"job {job_id}: SIGTERM sent; `cafe jobs show {job_id}` tells when it has ended")

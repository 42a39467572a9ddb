"""`cafe schedules ...`: recurring dataset jobs on the training service (see `cafe serve`).

    cafe schedules add --cron "0 * * * *" --input incoming/photos --output triples/live [--preset tiny] [--set K=V]
    cafe schedules list
    cafe schedules remove ID

Each firing submits `cafe data build --mode incremental` for the schedule's input and output; a firing
due while the previous run is still queued or running is skipped (and listed as skipped, with why).
Cron expressions are in UTC. Exit codes as `cafe jobs`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cafe_cli.console import fail, out
from cafe_cli.service_client import ServiceClient, TokenOption, UrlOption

app = typer.Typer(help="Recurring dataset jobs (cron) on the training service.", no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option("--json", help="print the service's JSON answer")]


@app.command()
def add(
    cron: Annotated[str, typer.Option(help="when, in UTC: minute hour day month weekday, e.g. '0 * * * *'")],
    input: Annotated[str, typer.Option("--input", "-i", help="images to build from (a path on the service)")],
    output: Annotated[str, typer.Option("--output", "-o", help="the shard set kept up to date")],
    preset: Annotated[str, typer.Option(help="models: tiny (random, offline), medium, base, large")] = "tiny",
    sets: Annotated[
        list[str] | None, typer.Option("--set", help="KEY=VALUE build setting, e.g. gates.min_box_score=0.3")
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = "http://127.0.0.1:8780",
    token: TokenOption = None,
) -> None:
    """Add a schedule: `cafe data build --mode incremental` of INPUT into OUTPUT at every cron time."""
    from cafe_core.settings import parse_sets

    try:
        overrides = parse_sets(sets or [])
    except ValueError as exc:
        fail(str(exc))
    body = {"cron": cron, "input": input, "output": output, "preset": preset, "overrides": overrides}
    schedule = ServiceClient(url, token).call("POST", "/schedules", json=body)
    if as_json:
        out.print_json(json.dumps(schedule))
        return
    out.print(f"schedule {schedule['id']} added: '{schedule['cron']}', next at {schedule['next_fire_at']}")


@app.command("list")
def list_schedules(
    as_json: JsonOption = False,
    url: UrlOption = "http://127.0.0.1:8780",
    token: TokenOption = None,
) -> None:
    """Every schedule, its next time and its latest firings."""
    found = ServiceClient(url, token).call("GET", "/schedules")
    if as_json:
        out.print_json(json.dumps(found))
        return
    table = Table("id", "cron", "input", "output", "next", "last firing", title="schedules")
    for schedule in found["schedules"]:
        runs = schedule["runs"]
        last = ""
        if runs:
            run = runs[0]
            last = f"{run['fired_at']} {run['outcome']}" + (f" job {run['job_id']}" if run["job_id"] else "")
            if run.get("reason"):
                last += f" ({run['reason']})"
        spec = schedule["spec"]
        table.add_row(
            str(schedule["id"]), schedule["cron"], spec["input"], spec["output"], schedule["next_fire_at"], last
        )
    out.print(table)


@app.command()
def remove(
    schedule_id: Annotated[int, typer.Argument(help="the schedule's id")],
    url: UrlOption = "http://127.0.0.1:8780",
    token: TokenOption = None,
) -> None:
    """Remove a schedule (the jobs it started stay, running ones keep running)."""
    ServiceClient(url, token).call("DELETE", f"/schedules/{schedule_id}")
    out.print(f"schedule {schedule_id} removed")

"""`cafe serve`: the training service, an HTTP job API over Ray (see cafe_service).

    export CAFE_SERVICE_TOKEN="$(python -c 'import secrets; print(secrets.token_urlsafe())')"
    cafe serve --root /data --db /data/cafe-service/service.db --slots 2        # http://127.0.0.1:8780

Jobs are `cafe` commands run detached through Ray (a local Ray, or RAY_ADDRESS's cluster); stopping
the service leaves them running and a restart adopts them. The web stack is imported inside the command.
Exit codes: 2 a usage error (no token, a --root that is not a folder); 1 the port is in use (the message
names it; pick another with --port) or the service failed to start.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from cafe_cli.console import fail, out
from cafe_cli.listen import listen, run_server

TOKEN_ENV = "CAFE_SERVICE_TOKEN"
DEFAULT_PORT = 8780


def serve(
    host: Annotated[str, typer.Option(help="address to bind; the default answers this machine only")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = DEFAULT_PORT,
    db: Annotated[Path, typer.Option("--db", help="the SQLite file of jobs and schedules")] = Path(
        "cafe-service/service.db"
    ),
    jobs_dir: Annotated[
        Path | None,
        typer.Option(help="per-job folders (log.txt, exit.json); default: jobs/ beside --db; shared on a cluster"),
    ] = None,
    roots: Annotated[
        list[Path] | None,
        typer.Option("--root", help="a data root; every path in a job must resolve inside one (repeatable; default .)"),
    ] = None,
    slots: Annotated[int, typer.Option(min=1, help="jobs running at once; more wait in a FIFO queue")] = 2,
    token: Annotated[
        str | None,
        typer.Option(envvar=TOKEN_ENV, help=f"the bearer token every request but /health needs (or {TOKEN_ENV})"),
    ] = None,
    cancel_grace_s: Annotated[float, typer.Option(min=0, help="seconds from SIGTERM to SIGKILL on cancel")] = 10.0,
    schedule_tick_s: Annotated[float, typer.Option(min=0.01, help="how often due schedules are looked for")] = 15.0,
    poll_s: Annotated[float, typer.Option(min=0.01, help="how often running jobs are checked")] = 0.5,
    max_body_kb: Annotated[int, typer.Option(min=1, help="larger request bodies are refused (413)")] = 64,
) -> None:
    """Serve the job API: submit build-data, train, improve-round, loop and eval jobs; schedules; logs."""
    if not token:
        fail(
            f"--token: the service needs a bearer token; pass --token TOKEN or set {TOKEN_ENV} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )
    from cafe_service import ServiceSettings, create_app

    try:
        settings = ServiceSettings(
            db_path=db,
            token=token,
            roots=roots or [Path.cwd()],
            jobs_dir=jobs_dir,
            slots=slots,
            poll_s=poll_s,
            cancel_grace_s=cancel_grace_s,
            schedule_tick_s=schedule_tick_s,
            max_body_bytes=max_body_kb * 1024,
        )
    except ValueError as exc:
        fail(str(exc))
    # Bound before the app opens its database, so a port in use leaves nothing behind.
    sock = listen(host, port, what="`cafe serve`")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app_ = create_app(settings)
    shown_host = f"[{host}]" if ":" in host else host
    where = settings.ray_address or "a local Ray"
    out.print(f"cafe training service on [bold]http://{shown_host}:{port}/[/] (Ctrl-C stops it; jobs keep running)")
    out.print(f"database {settings.db_path}, job folders {settings.jobs_dir}, {slots} slots, jobs on {where}")
    out.print("data roots: " + ", ".join(str(root) for root in settings.roots))
    # A follower of a long job's log must not hold Ctrl-C up: open streams get 5 s, then the server stops.
    run_server(app_, sock, what="the training service", timeout_graceful_shutdown=5)

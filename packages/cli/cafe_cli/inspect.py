"""`cafe inspect serve DIR`: the shard browser, a web page to look through triples and flag bad ones.

    cafe inspect serve demo-output/shards                      # http://127.0.0.1:8765/
    cafe inspect serve /data/sets --port 9000 --token "$(python -c 'import secrets; print(secrets.token_urlsafe())')"

The web stack (cafe_inspector, fastapi, uvicorn) is imported inside the command, so the rest
of `cafe` starts without it. Exit codes: 2 a usage error (a missing folder, --host beyond loopback
without --token); 1 the port is in use (the message names it; pick another with --port).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from cafe_cli.console import fail, out
from cafe_cli.listen import listen, run_server

app = typer.Typer(help="The shard browser: look through triples, filter them, flag bad samples.", no_args_is_help=True)

TOKEN_ENV = "CAFE_INSPECTOR_TOKEN"
# A flag request is under 1 KB (a set name, a key, a reason of at most 500 characters).
DEFAULT_MAX_BODY_KB = 16


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    root: Annotated[
        Path,
        typer.Argument(help="a shard set, or a folder holding sets", exists=True, file_okay=False, resolve_path=True),
    ],
    host: Annotated[str, typer.Option(help="address to bind; the default answers this machine only")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    token: Annotated[
        str | None,
        typer.Option(envvar=TOKEN_ENV, help=f"require this token on every request but /health (or set {TOKEN_ENV})"),
    ] = None,
    max_body_kb: Annotated[
        int, typer.Option(min=1, help="larger request bodies are refused (413) before they are read")
    ] = DEFAULT_MAX_BODY_KB,
) -> None:
    """Serve the shard browser for the sets under ROOT. Shards are only read; flags go to SET/flags.parquet."""
    loopback = _is_loopback(host)
    if not loopback and not token:
        fail(
            f"--host {host} exposes the browser (and flag writing) beyond this machine; "
            f"pass --token TOKEN (or set {TOKEN_ENV}), or keep the default --host 127.0.0.1"
        )
    if token is not None and len(token) < 8:
        fail("--token: use at least 8 characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`")
    sock = listen(host, port, what="`cafe inspect serve`")
    from cafe_inspector import create_app

    allowed_hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] if loopback else None
    app_ = create_app(root, token=token, allowed_hosts=allowed_hosts, max_body_bytes=max_body_kb * 1024)
    shown_host = "127.0.0.1" if loopback else host
    url = f"http://{shown_host}:{port}/" + ("?token=…" if token else "")
    out.print(f"shard browser for {root} on [bold]{url}[/] (Ctrl-C stops it)")
    if token:
        out.print(f"open {url.replace('…', 'TOKEN')} once with the token; the page keeps it in a cookie")
    run_server(app_, sock, what="the shard browser")

"""Shared terminal output for the `cafe` commands: consoles, exit codes, progress bars."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Exit codes: 0 fine, 1 problems found (validation, corrupt data, a server's port in use),
# 2 usage error (bad arguments).
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

out = Console(soft_wrap=True)  # long paths stay on one line, for copying and grepping
err = Console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print an error naming the bad value and the fix, then exit with `code`."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def progress() -> Progress:
    """A progress bar on stderr, so stdout stays clean for piping (e.g. `--json`)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )

"""An output never lands in its input: the check every command that writes a set or a run makes.

A set or a run written into the folder it reads (or around it) mixes its files with the input's,
and overwrite mode would clear the input. So an output may not be an input, lie inside one, or hold
one; paths are compared resolved (symlinks followed, `~` expanded).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class OutputInsideInput(ValueError):
    """The output is, lies inside, or holds one of the inputs; the message names both."""


def check_output_apart(output: str | Path, inputs: Iterable[str | Path], what: str = "input") -> None:
    """OutputInsideInput when `output` is one of `inputs`, lies inside one, or holds one.

    An input may be a file (a manifest, a tar): an output folder holding it is refused too.
    """
    out = Path(output).expanduser().resolve()
    for given in inputs:
        source = Path(given).expanduser().resolve()
        if out == source:
            suggestion = out.parent / f"{out.name}-out"
            raise OutputInsideInput(
                f"output {output}: it is the {what} {given}; write to a new folder, e.g. {suggestion}"
            )
        if source in out.parents:
            raise OutputInsideInput(
                f"output {output}: it lies inside the {what} {given}; keep the output apart from it"
            )
        if out in source.parents:
            raise OutputInsideInput(f"output {output}: it holds the {what} {given}; keep the output apart from it")

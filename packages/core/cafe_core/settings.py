"""Job settings from YAML files and `--set KEY=VALUE` overrides, shared by every typed job config.

values = load_yaml("job.yaml")                                   # --config job.yaml
values = parse_sets(["gates.min_box_score=0.3", "lr=1e-4"])      # --set ... (values parsed as YAML)
check_fields(TrainConfig, values, "training")                    # unknown / missing fields, named
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML settings file; ValueError naming the file for anything else."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of settings at the top level")
    return values


def parse_sets(assignments: list[str]) -> dict[str, Any]:
    """`["gates.min_box_score=0.3", "resources.caption.concurrency=2"]` -> nested dict; values are YAML."""
    result: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {assignment!r}: expected KEY=VALUE, e.g. gates.min_box_score=0.3")
        node = result
        *parents, leaf = name.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return result


def check_fields(config_class: type, values: dict[str, Any], what: str) -> None:
    """ValueError naming the settings `config_class` (a dataclass) does not have, listing the known ones,
    or the required ones `values` lacks. `what` names the job in the message ("training", "loop")."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    missing = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in values
    ]
    if missing:
        raise ValueError(f"missing required {what} setting(s): {', '.join(missing)} (e.g. --set {missing[0]}=...)")

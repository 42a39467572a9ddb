"""TrainConfig to and from plain data: YAML recipes, `--set` overrides, the JSON a launcher hands its workers.

    config = load_train_config("run.yaml", shards=["out/triples"], sets=["lr=3e-4", "max_steps=200"])
    values = config_to_dict(config)            # JSON-able (paths as strings)
    config = config_from_dict(values)          # validated again, as on construction

Precedence: the YAML file, then keyword fields, then `--set` overrides. Required fields (shards,
output_dir, preset) may come from any of them.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from cafe_core.settings import check_fields, load_yaml, parse_sets
from cafe_train.config import TrainConfig


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Every field, JSON-able: paths become strings."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A validated TrainConfig; ValueError naming unknown or missing fields and listing the known ones."""
    check_fields(TrainConfig, values, "training")
    hints = typing.get_type_hints(TrainConfig)
    coerced = {
        name: _as_float(name, value) if _takes_float(hints[name], value) else value for name, value in values.items()
    }
    return TrainConfig(**coerced)


def _takes_float(hint: Any, value: Any) -> bool:
    # `float | None` fields (ema_decay, min_snr_gamma) take a number too; None stays None.
    return hint is float or (hint == float | None and value is not None)


def _as_float(name: str, value: Any) -> Any:
    # YAML 1.1 reads `3e-4` (no dot) as a string and `1` as an int; a float field takes both.
    if isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: must be a number") from None


def load_train_config(path: str | Path | None = None, *, sets: list[str] | None = None, **fields: Any) -> TrainConfig:
    """The YAML file at `path` (if any), then `fields` (None values ignored), then `--set` assignments."""
    values: dict[str, Any] = load_yaml(path) if path is not None else {}
    values.update({name: value for name, value in fields.items() if value is not None})
    values.update(parse_sets(sets or []))
    return config_from_dict(values)


def write_config(config: TrainConfig, path: str | Path) -> Path:
    """Write `config_to_dict(config)` as JSON (readable by `load_train_config`, since JSON is YAML)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_to_dict(config), indent=1, sort_keys=True))
    return path

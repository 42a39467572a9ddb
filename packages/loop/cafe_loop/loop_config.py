"""The typed config of the self-improvement loop: what `cafe_loop.loop.run_loop` does, validated on construction.

    config = load_loop_config("loop.yaml", sets=["rounds=3", "train.max_steps=500"])
    config = LoopConfig(output="runs/loop", shards=["out/triples"], preset="tiny", rounds=2,
                        train={"max_steps": 200}, improve={"candidates_per_pair": 4})

```yaml
# loop.yaml
output: runs/loop              # the run folder: round-0/, round-1/, ..., loop-report.json
shards: [out/triples]          # the real shard sets
preset: tiny                   # the model preset (TrainConfig.preset)
scorer_preset: tiny            # the improve rounds' scorers (default: tiny for a random model preset, else base)
rounds: 2                      # self-improvement rounds after round 0's training
min_acceptance_rate: 0.05      # stop when a round accepts a smaller share of its candidates
real_to_generated: 3           # the training mix: real samples drawn per generated one
train: {max_steps: 1000, batch_size: 8}        # TrainConfig fields; max_steps = steps per round
improve: {candidates_per_pair: 4}             # ImproveConfig fields (over `improve_recipe(preset)`)
```

Required fields (output, shards, preset) have no defaults. A bad value raises ValueError naming it (for
`train` and `improve`, the field inside them) and what is allowed; a missing shard set folder raises
FileNotFoundError. `output` stays apart from the real sets: not one, not inside one, not holding one
(`cafe_core.apart.OutputInsideInput`, a ValueError). The loop sets some fields of the mappings itself, so
they are refused there: `train.shards/output_dir/preset/shard_weights` and `improve.checkpoint/shards/output/preset`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cafe_core.apart import check_output_apart
from cafe_core.settings import check_fields, load_yaml, parse_sets
from cafe_model.presets import get_preset
from cafe_pipelines.improve_config import ImproveConfig, improve_recipe
from cafe_train.config import TrainConfig
from cafe_train.config_io import config_from_dict

# Set per round by the loop, so a value given in the mappings would be silently replaced: refused instead.
TRAIN_FIELDS_SET_BY_LOOP = ("shards", "output_dir", "preset", "shard_weights")
IMPROVE_FIELDS_SET_BY_LOOP = ("checkpoint", "shards", "output", "preset")


@dataclass
class LoopConfig:
    """N rounds of train ⇄ improve; see `cafe_loop.loop` for what each round does and writes."""

    output: Path
    shards: list[Path]
    preset: str
    rounds: int = 2
    min_acceptance_rate: float = 0.05
    real_to_generated: float = 3.0
    # The improve rounds' scorer preset (ImproveConfig.preset, `improve_recipe`'s name); None: `tiny` for a
    # random model preset (its models are random too), else `base`.
    scorer_preset: str | None = None
    train: dict[str, Any] = field(default_factory=dict)
    improve: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if isinstance(self.shards, str | Path):
            self.shards = [self.shards]
        self.shards = [Path(s) for s in self.shards]
        if not self.shards:
            raise ValueError("shards: give at least one real shard set folder")
        # Rounds write runs and generated sets under `output`: inside a real set they would become part of it.
        check_output_apart(self.output, self.shards, "shard set")
        if not isinstance(self.rounds, int) or isinstance(self.rounds, bool) or self.rounds < 0:
            raise ValueError(f"rounds={self.rounds!r}: must be an integer >= 0 (0 = train on the real sets only)")
        if not (_is_number(self.min_acceptance_rate) and 0.0 <= self.min_acceptance_rate <= 1.0):
            raise ValueError(
                f"min_acceptance_rate={self.min_acceptance_rate!r}: must be a number in [0, 1] (the share of a"
                " round's candidates that pass the filters, below which the loop stops)"
            )
        self.min_acceptance_rate = float(self.min_acceptance_rate)
        if not (_is_number(self.real_to_generated) and 0 < self.real_to_generated < math.inf):
            raise ValueError(
                f"real_to_generated={self.real_to_generated!r}: must be a finite number > 0, e.g. 3 for 3 real"
                " samples per generated one"
            )
        self.real_to_generated = float(self.real_to_generated)
        for name, reserved in (("train", TRAIN_FIELDS_SET_BY_LOOP), ("improve", IMPROVE_FIELDS_SET_BY_LOOP)):
            values = getattr(self, name)
            if values is None:
                values = {}
            if not isinstance(values, dict):
                raise ValueError(f"{name}={values!r}: must be a mapping of settings, e.g. {{max_steps: 100}}")
            taken = sorted(set(values) & set(reserved))
            if taken:
                raise ValueError(
                    f"{name}: {', '.join(taken)} set by the loop for each round; remove "
                    f"{'it' if len(taken) == 1 else 'them'} (the loop's own output, shards and preset apply)"
                )
            setattr(self, name, dict(values))
        if self.scorer_preset is None:
            self.scorer_preset = get_preset(self.preset).default_scorers
        self.round_train_config(0, self.shards, None)  # validates `train`, the preset and the shard folders
        # Validates `improve` (the checkpoint is not read until a round runs).
        self.round_improve_config(self.round_dir(0) / "train", self.shards, self.round_dir(1) / "shards")

    @property
    def steps_per_round(self) -> int:
        """Optimizer steps of each round's training (`train.max_steps`, else TrainConfig's default)."""
        return int(self.train.get("max_steps", _train_default("max_steps")))

    def round_dir(self, round_: int) -> Path:
        return self.output / f"round-{round_}"

    def round_train_config(self, round_: int, shards: list[Path], shard_weights: list[float] | None) -> TrainConfig:
        """Round `round_`'s TrainConfig: `train` with the round's sets, run folder and total steps.

        Steps count on from round to round (each round's run starts from the previous round's last
        checkpoint), so round r trains up to (r + 1) * steps_per_round."""
        values = {
            **self.train,
            "shards": [str(s) for s in shards],
            "output_dir": str(self.round_dir(round_) / "train"),
            "preset": self.preset,
            "shard_weights": shard_weights,
        }
        try:
            config = config_from_dict(values)
        except ValueError as exc:
            raise ValueError(f"train: {exc}") from exc
        config.max_steps = (round_ + 1) * config.max_steps
        return config

    def round_improve_config(self, checkpoint: Path, shards: list[Path], output: Path) -> ImproveConfig:
        """An improve round's config: `improve_recipe(scorer_preset)` with `improve` over it, and the round's
        checkpoint, input sets and output."""
        try:
            return improve_recipe(
                self.scorer_preset,
                checkpoint=str(checkpoint),
                shards=[str(s) for s in shards],
                output=str(output),
                **copy.deepcopy(self.improve),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"improve: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (paths as strings)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def _train_default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` over `base`, mappings merged key by key (so `--set train.max_steps=5` keeps the file's other
    train settings)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_loop_config(path: str | Path | None = None, *, sets: list[str] | None = None, **fields: Any) -> LoopConfig:
    """The YAML file at `path` (if any), then `fields` (None values ignored), then `--set` assignments
    (`train.max_steps=5` reaches into the `train` mapping). ValueError naming unknown or missing fields."""
    values: dict[str, Any] = load_yaml(path) if path is not None else {}
    values = _merge(values, {name: value for name, value in fields.items() if value is not None})
    values = _merge(values, parse_sets(sets or []))
    check_fields(LoopConfig, values, "loop")
    return LoopConfig(**values)

"""Job specs: what `POST /jobs` takes, one typed model per job kind, each mapping onto a real `cafe` command.

| kind          | runs                                                                                   |
|---------------|----------------------------------------------------------------------------------------|
| build-data    | `cafe data build --input IN --output OUT --preset P --mode M [--set K=V ...]`          |
| train         | `cafe train run --shards S... --output RUN --preset P [--set ...]`, or with `launch`:   |
|               | `cafe train launch --backend ray|accelerate --num-workers N [--gpu] ...`               |
| improve-round | `cafe improve round --checkpoint RUN --shards S... --output OUT --preset P [--mode M]` |
| loop          | `cafe loop run --config JOBDIR/loop.yaml` (the spec's fields are the loop config)      |
| eval          | `cafe eval --checkpoint RUN --eval-set DIR [--out DIR] [--preset P] ...`               |

    {"kind": "build-data", "input": "photos", "output": "triples", "preset": "tiny",
     "overrides": {"gates": {"min_box_score": 0.3}}}

Required fields have no defaults; unknown fields are refused. `overrides` are `--set KEY=VALUE` of the
command (nested mappings become dotted keys; values are scalars or lists of them). Paths are checked
by `checked(guard)`: every path field, and every override whose name says it is a path (`*_dir`,
`*_path`, `*_file`, `*_root`, `*checkpoint`), must resolve inside the data roots; overrides of the
fields the spec sets itself (`output`, `shards`, ...) are refused. Validation of the settings
themselves (a bad `max_steps`) is the command's own: the job fails at once with its message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from cafe_service.errors import BadValue
from cafe_service.guard import PathGuard

KINDS = ("build-data", "train", "improve-round", "loop", "eval")
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
PATH_SUFFIXES = ("_dir", "_path", "_file", "_root", "checkpoint")
MAX_OVERRIDES = 200
MAX_PATHS = 256

Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
PathText = Annotated[str, Field(min_length=1, max_length=4096)]
PathList = Annotated[list[PathText], Field(min_length=1, max_length=MAX_PATHS)]
Overrides = Annotated[dict[str, Any], Field(max_length=MAX_OVERRIDES)]


def flatten(mapping: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """`{"gates": {"min_box_score": 0.3}}` -> ("gates.min_box_score", 0.3)."""
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flatten(value, name + ".")
        else:
            yield name, value


def is_path_setting(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return leaf.endswith(PATH_SUFFIXES)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def check_settings(
    values: dict[str, Any], guard: PathGuard, *, field: str, reserved: tuple[str, ...]
) -> dict[str, Any]:
    """Flat `name -> value` of a settings mapping, path-like values resolved inside the roots.

    BadValue naming `FIELD.NAME` for a bad name, a value that is not a scalar or a list of scalars,
    or a name the spec sets itself (`reserved`)."""
    flat: dict[str, Any] = {}
    for name, value in flatten(values):
        where = f"{field}.{name}"
        if not SETTING_NAME.match(name):
            raise BadValue(f"{where}: {name!r} is not a setting name (names, dots between them)", where)
        if name.split(".", 1)[0] in reserved:
            raise BadValue(
                f"{where}: {name} is set by the spec itself; give it as the spec's own field, not in {field}", where
            )
        if not (_is_scalar(value) or (isinstance(value, list) and all(_is_scalar(v) for v in value))):
            raise BadValue(f"{where}: a value must be a number, string, boolean, null or a list of them", where)
        if is_path_setting(name) and value is not None:
            if isinstance(value, list):
                value = [str(guard.check(f"{where}.{i}", str(v))) for i, v in enumerate(value)]
            else:
                value = str(guard.check(where, str(value)))
        flat[name] = value
    return flat


def set_args(flat: dict[str, Any]) -> list[str]:
    """`--set NAME=VALUE` for each setting; values as JSON, which the command reads as YAML."""
    args: list[str] = []
    for name, value in flat.items():
        args += ["--set", f"{name}={json.dumps(value)}"]
    return args


def _paths(guard: PathGuard, field: str, values: list[str]) -> list[str]:
    return [str(guard.check(f"{field}.{i}", value)) for i, value in enumerate(values)]


class SpecBase(BaseModel):
    """What every spec does: check its paths, name its command and its output folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    RESERVED: ClassVar[tuple[str, ...]] = ()

    def checked(self, guard: PathGuard) -> Self:
        """A copy with every path resolved inside the roots; BadValue/OutsideRoots naming the field."""
        raise NotImplementedError

    def cafe_args(self, job_dir: Path) -> list[str]:
        """The `cafe` command's arguments (after `cafe`), for a spec that went through `checked`."""
        raise NotImplementedError

    def job_files(self) -> dict[str, str]:
        """Files to write into the job folder before the command runs (name -> text)."""
        return {}

    def output_path(self) -> Path | None:
        """The folder the job writes: what `GET /jobs/{id}/artifacts` lists."""
        raise NotImplementedError

    def _overrides(self, guard: PathGuard) -> dict[str, Any]:
        return check_settings(getattr(self, "overrides", {}), guard, field="overrides", reserved=self.RESERVED)


class BuildDataSpec(SpecBase):
    """`cafe data build`: raw images (a folder, a manifest, shards) to a triple shard set.

    The command gets the data roots as `--input-root`, so every path inside a manifest (and every tar of
    a pattern) is held to them too (a path outside is the input's `input.outside_root` status row, never
    read); `--allow-outside-root` is never passed, and overrides cannot set either."""

    RESERVED: ClassVar[tuple[str, ...]] = ("input", "output", "preset", "mode")
    ROOT_SETTINGS: ClassVar[tuple[str, ...]] = ("input_roots", "allow_outside_root")

    kind: Literal["build-data"]
    input: PathText
    output: PathText
    preset: Name
    mode: Literal["incremental", "overwrite", "extend"] = "incremental"
    overrides: Overrides = Field(default_factory=dict)
    # The guard's roots, set by `checked` (a private attribute: never in the spec's JSON, never from a client).
    _input_roots: tuple[str, ...] = ()

    def checked(self, guard: PathGuard) -> Self:
        for name in self.ROOT_SETTINGS:
            if name in self.overrides:
                where = f"overrides.{name}"
                raise BadValue(
                    f"{where}: the service holds every input to its data roots ({guard.describe_roots()}); "
                    "put the manifest's images inside them",
                    where,
                )
        overrides = self._overrides(guard)
        copy = self.model_copy(
            update={
                "input": str(guard.check("input", self.input)),
                "output": str(guard.check("output", self.output)),
                "overrides": overrides,
            }
        )
        copy._input_roots = tuple(str(root) for root in guard.roots)
        return copy

    def cafe_args(self, job_dir: Path) -> list[str]:
        roots = [arg for root in self._input_roots for arg in ("--input-root", root)]
        return [
            *("data", "build", "--input", self.input, "--output", self.output),
            *("--preset", self.preset, "--mode", self.mode),
            *roots,
            *set_args(self.overrides),
        ]

    def output_path(self) -> Path | None:
        return Path(self.output)


class TrainLaunch(BaseModel):
    """`cafe train launch` instead of `cafe train run`: N workers under Ray Train or accelerate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["ray", "accelerate"]
    num_workers: Annotated[int, Field(ge=1, le=4096)]
    gpu: bool = False
    max_failures: Annotated[int, Field(ge=-1)] = 1


class TrainSpec(SpecBase):
    """`cafe train run` (this node's CPU or GPU), or `cafe train launch` with `launch`."""

    RESERVED: ClassVar[tuple[str, ...]] = ("shards", "output_dir", "preset")

    kind: Literal["train"]
    shards: PathList
    output: PathText
    preset: Name
    launch: TrainLaunch | None = None
    overrides: Overrides = Field(default_factory=dict)

    def checked(self, guard: PathGuard) -> Self:
        overrides = self._overrides(guard)
        return self.model_copy(
            update={
                "shards": _paths(guard, "shards", self.shards),
                "output": str(guard.check("output", self.output)),
                "overrides": overrides,
            }
        )

    def cafe_args(self, job_dir: Path) -> list[str]:
        if self.launch is None:
            command = ["train", "run"]
        else:
            command = [
                "train",
                "launch",
                "--backend",
                self.launch.backend,
                "--num-workers",
                str(self.launch.num_workers),
            ]
            if self.launch.gpu:
                command.append("--gpu")
            if self.launch.backend == "ray":
                command += ["--max-failures", str(self.launch.max_failures)]
        for shard_dir in self.shards:
            command += ["--shards", shard_dir]
        return [*command, "--output", self.output, "--preset", self.preset, *set_args(self.overrides)]

    def output_path(self) -> Path | None:
        return Path(self.output)


class ImproveRoundSpec(SpecBase):
    """`cafe improve round`: generate, score, filter and write the next round's shard set."""

    RESERVED: ClassVar[tuple[str, ...]] = ("checkpoint", "shards", "output", "preset", "mode")

    kind: Literal["improve-round"]
    checkpoint: PathText
    shards: PathList
    output: PathText
    preset: Name
    mode: Literal["incremental", "overwrite"] | None = None
    overrides: Overrides = Field(default_factory=dict)

    def checked(self, guard: PathGuard) -> Self:
        overrides = self._overrides(guard)
        return self.model_copy(
            update={
                "checkpoint": str(guard.check("checkpoint", self.checkpoint)),
                "shards": _paths(guard, "shards", self.shards),
                "output": str(guard.check("output", self.output)),
                "overrides": overrides,
            }
        )

    def cafe_args(self, job_dir: Path) -> list[str]:
        command = ["improve", "round", "--checkpoint", self.checkpoint]
        for shard_dir in self.shards:
            command += ["--shards", shard_dir]
        command += ["--output", self.output, "--preset", self.preset]
        if self.mode is not None:
            command += ["--mode", self.mode]
        return [*command, *set_args(self.overrides)]

    def output_path(self) -> Path | None:
        return Path(self.output)


class LoopSpec(SpecBase):
    """`cafe loop run`: train ⇄ improve for N rounds. The fields are the loop config (cafe_loop.loop_config),
    written to JOBDIR/loop.yaml; `train` and `improve` are mappings of those configs' fields."""

    kind: Literal["loop"]
    output: PathText
    shards: PathList
    preset: Name
    rounds: Annotated[int, Field(ge=0, le=1000)] = 2
    min_acceptance_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    real_to_generated: Annotated[float, Field(gt=0)] = 3.0
    train: Overrides = Field(default_factory=dict)
    improve: Overrides = Field(default_factory=dict)

    CONFIG_NAME: ClassVar[str] = "loop.yaml"

    def checked(self, guard: PathGuard) -> Self:
        # The loop refuses the fields it sets per round itself (train.output_dir, improve.shards, ...) with its
        # own message; here only path-like settings are kept inside the roots.
        train = check_settings(self.train, guard, field="train", reserved=())
        improve = check_settings(self.improve, guard, field="improve", reserved=())
        return self.model_copy(
            update={
                "output": str(guard.check("output", self.output)),
                "shards": _paths(guard, "shards", self.shards),
                "train": _nest(train),
                "improve": _nest(improve),
            }
        )

    def job_files(self) -> dict[str, str]:
        config = self.model_dump(exclude={"kind"})
        return {self.CONFIG_NAME: yaml.safe_dump(config, sort_keys=False)}

    def cafe_args(self, job_dir: Path) -> list[str]:
        return ["loop", "run", "--config", str(job_dir / self.CONFIG_NAME)]

    def output_path(self) -> Path | None:
        return Path(self.output)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        node = nested
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


class EvalSpec(SpecBase):
    """`cafe eval`: DINO, CLIP-I and CLIP-T of a run on a DreamBench-style evaluation set."""

    kind: Literal["eval"]
    checkpoint: PathText
    eval_set: PathText
    out: PathText | None = None
    preset: Name | None = None
    images_per_prompt: Annotated[int, Field(ge=1, le=1000)] = 4
    seed: int = 0
    steps: Annotated[int, Field(ge=1, le=10_000)] = 30
    guidance: float = 7.5
    size: Annotated[int, Field(ge=8)] | None = None

    def checked(self, guard: PathGuard) -> Self:
        return self.model_copy(
            update={
                "checkpoint": str(guard.check("checkpoint", self.checkpoint)),
                "eval_set": str(guard.check("eval_set", self.eval_set)),
                "out": None if self.out is None else str(guard.check("out", self.out)),
            }
        )

    def cafe_args(self, job_dir: Path) -> list[str]:
        command = ["eval", "--checkpoint", self.checkpoint, "--eval-set", self.eval_set]
        if self.out is not None:
            command += ["--out", self.out]
        if self.preset is not None:
            command += ["--preset", self.preset]
        command += ["--images-per-prompt", str(self.images_per_prompt), "--seed", str(self.seed)]
        command += ["--steps", str(self.steps), "--guidance", str(self.guidance)]
        if self.size is not None:
            command += ["--size", str(self.size)]
        return command

    def output_path(self) -> Path | None:
        if self.out is not None:
            return Path(self.out)
        checkpoint = Path(self.checkpoint)
        # `cafe eval` writes RUN/eval/step-NNNNNN by default, for a run folder or one of its step folders.
        run_dir = checkpoint.parent.parent if checkpoint.name.startswith("step-") else checkpoint
        return run_dir / "eval"


JobSpec = Annotated[
    BuildDataSpec | TrainSpec | ImproveRoundSpec | LoopSpec | EvalSpec,
    Field(discriminator="kind"),
]
JOB_SPEC = TypeAdapter(JobSpec)


def parse_spec(value: dict[str, Any] | str) -> SpecBase:
    """A spec from its JSON text or mapping (pydantic.ValidationError when malformed)."""
    if isinstance(value, str):
        return JOB_SPEC.validate_json(value)
    return JOB_SPEC.validate_python(value)

"""infra/: every manifest parses; every `cafe` command in it is a real command with real options and settings;
the KubeRay, CronJob, accelerate, Ray cluster launcher and Docker files hold what their tools require.

Commands are found in the parsed YAML (RayJob entrypoints, container command/args, CronJob scripts, cluster
launcher commands, manifests embedded in ConfigMaps), in code lines of comments (`#` followed by two or more
spaces, e.g. `#   cafe data build ...`; prose comments have one), in the Dockerfile's ENTRYPOINT/CMD and in
the code blocks of infra/README.md. For each: the subcommand path must resolve in the real CLI and its
`--help` exit 0, every option used must be one of that command's options and appear in its help, option
values must convert (choices, ranges), required options must be given, and `--config` files (from the
ConfigMaps the pods mount) must validate with the job's own config class. All in this process through
typer's CliRunner: one import of the CLI rather than a subprocess per command.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.rich_utils
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from cafe_cli.main import app

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
GPU = "nvidia.com/gpu"
# The image built from infra/Dockerfile, as the manifests name it (any registry, any tag).
CAFE_IMAGE = re.compile(r"(^|/)cafe:[\w.-]+$")
SHELLS = {"sh", "bash"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ";;"}
REDIRECTS = {">", ">>", "<", "2>", "&>", ">&"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Doc:
    source: str  # the file under infra/, and for an embedded manifest the ConfigMap and key holding it
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.body.get("kind", "")


def rel(path: Path) -> str:
    return str(path.relative_to(INFRA))


@cache
def yaml_files() -> tuple[Path, ...]:
    return tuple(sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml")))


def embedded_manifest(text: str) -> dict[str, Any] | None:
    """A ConfigMap value that is itself a Kubernetes manifest, else None."""
    if "\n" not in text or "apiVersion:" not in text:
        return None
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return body if isinstance(body, dict) and "apiVersion" in body and "kind" in body else None


@cache
def docs() -> tuple[Doc, ...]:
    """Every YAML document under infra/ (multi-document files too), then the manifests embedded in ConfigMaps."""
    found = []
    for path in yaml_files():
        for body in yaml.safe_load_all(path.read_text()):
            if body is None:
                continue
            assert isinstance(body, dict), f"{rel(path)}: a document that is not a mapping"
            found.append(Doc(rel(path), body))
    for doc in list(found):
        if doc.kind == "ConfigMap":
            for key, value in (doc.body.get("data") or {}).items():
                body = embedded_manifest(value)
                if body is not None:
                    found.append(Doc(f"{doc.source} > ConfigMap {doc.body['metadata']['name']}/{key}", body))
    return tuple(found)


def docs_of(kind: str) -> list[Doc]:
    return [d for d in docs() if d.kind == kind]


def pod_specs(value: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec (a mapping with `containers`) inside a manifest, with where it is."""
    if isinstance(value, dict):
        if isinstance(value.get("containers"), list):
            yield where, value
        for key, item in value.items():
            yield from pod_specs(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from pod_specs(item, f"{where}[{index}]")


def ray_groups(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, group) of a RayCluster spec's head and worker groups."""
    groups = [("head", spec["headGroupSpec"])]
    groups += [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs") or []]
    return groups


def ray_cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(where, spec) of every Ray cluster: RayClusters' spec and RayJobs' rayClusterSpec."""
    specs = [(d.source, d.body["spec"]) for d in docs_of("RayCluster")]
    specs += [
        (d.source, d.body["spec"]["rayClusterSpec"]) for d in docs_of("RayJob") if "rayClusterSpec" in d.body["spec"]
    ]
    return specs


def gpu_limit(container: dict[str, Any]) -> int:
    return int((container.get("resources") or {}).get("limits", {}).get(GPU, 0))


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU quantity: "16", "500m", 2."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def cluster_cpus(spec: dict[str, Any]) -> float:
    """CPUs Ray can schedule on at a cluster's largest: the head's num-cpus (else its limit), workers' limits."""
    total = 0.0
    for name, group in ray_groups(spec):
        container = group["template"]["spec"]["containers"][0]
        limit = quantity((container.get("resources") or {}).get("limits", {}).get("cpu", 0))
        if name == "head":
            total += float((group.get("rayStartParams") or {}).get("num-cpus", limit))
        else:
            total += int(group.get("maxReplicas", group.get("replicas", 0))) * limit
    return total


def cluster_gpus(spec: dict[str, Any]) -> int:
    """GPUs of a Ray cluster at its largest: worker replicas (maxReplicas) x the ray container's GPU limit."""
    total = 0
    for name, group in ray_groups(spec):
        count = 1 if name == "head" else int(group.get("maxReplicas", group.get("replicas", 0)))
        total += count * gpu_limit(group["template"]["spec"]["containers"][0])
    return total


# ------------------------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]  # what follows `cafe`
    where: str

    def __str__(self) -> str:
        return f"`cafe {shlex.join(self.words)}` ({self.where})"


def is_cafe(word: str) -> bool:
    return word == "cafe" or word.endswith("/cafe")


def logical_lines(text: str) -> Iterator[str]:
    """Lines of a shell script with backslash continuations joined."""
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def split_shell(line: str, where: str) -> list[list[str]]:
    """A shell line as simple commands (token lists), cut at separators; redirections dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise AssertionError(f"{where}: cannot parse a line naming cafe as a shell command ({exc}): {line!r}") from exc
    segments: list[list[str]] = [[]]
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            segments.append([])
        elif token in REDIRECTS:
            skip_next = True  # the redirection's target
        else:
            segments[-1].append(token)
    return [s for s in segments if s]


def commands_in_segment(tokens: list[str], where: str) -> Iterator[Command]:
    words = list(tokens)
    while words and (ENV_ASSIGNMENT.match(words[0]) or words[0] in ("exec", "time", "nohup")):
        words.pop(0)
    if not words:
        return
    if is_cafe(words[0]):
        yield Command(tuple(words[1:]), where)
        return
    if words[0] == "docker" and "run" in words:  # docker run [options] IMAGE ARGS: ARGS go to ENTRYPOINT cafe
        for index, word in enumerate(words):
            if CAFE_IMAGE.search(word):
                yield Command(tuple(words[index + 1 :]), where)
                return
    if "--" in words and words.index("--") + 1 < len(words):  # ray job submit ... -- cafe ...
        yield from commands_in_segment(words[words.index("--") + 1 :], where)
        return
    for word in words:  # a quoted command line: ray exec cluster.yaml "RAY_ADDRESS=auto cafe ..."
        if " " in word.strip():
            yield from commands_in_shell(word, where)


def commands_in_shell(text: str, where: str) -> Iterator[Command]:
    for line in logical_lines(text):
        if re.search(r"\bcafe\b", line):
            for segment in split_shell(line, where):
                yield from commands_in_segment(segment, where)


def commands_in_value(value: Any, where: str) -> Iterator[Command]:
    """Commands in parsed YAML: scripts and entrypoints (strings with spaces), exec-form lists, cafe-image args."""
    if isinstance(value, dict):
        command, args = value.get("command"), value.get("args")
        handled = False  # a container's command and args, read as one command line
        if isinstance(value.get("image"), str) and CAFE_IMAGE.search(value["image"]) and command is None and args:
            yield Command(tuple(str(a) for a in args), f"{where}.args (the image's ENTRYPOINT cafe)")
            handled = True
        elif isinstance(command, list) and command and is_cafe(str(command[0])):
            yield Command(tuple(str(w) for w in [*command[1:], *(args or [])]), f"{where}.command")
            handled = True
        elif isinstance(command, list) and command and Path(str(command[0])).name in SHELLS:
            for word in [*command[1:], *(args or [])]:
                if not str(word).startswith("-"):  # the script, not sh's own flags (-c, -ec, -lc)
                    yield from commands_in_shell(str(word), f"{where}.command")
            handled = True
        for key, item in value.items():
            if not (handled and key in ("command", "args")):
                yield from commands_in_value(item, f"{where}.{key}")
    elif isinstance(value, list):
        if value and all(isinstance(v, str) for v in value) and is_cafe(value[0]):
            yield Command(tuple(value[1:]), where)
            return
        for index, item in enumerate(value):
            yield from commands_in_value(item, f"{where}[{index}]")
    elif isinstance(value, str) and embedded_manifest(value) is None and re.search(r"\s", value.strip()):
        yield from commands_in_shell(value, where)


def code_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Command examples in a file's text: comment lines indented as code, or README code blocks."""
    lines = path.read_text().splitlines()
    if path.suffix == ".md":
        fenced = False
        for number, line in enumerate(lines, 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
            elif fenced:
                yield number, line.strip().removeprefix("$ ")
        return
    for number, line in enumerate(lines, 1):
        match = re.match(r"\s*#( {2,}.*)$", line)
        if match:
            yield number, match.group(1).strip().removeprefix("$ ")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of infra/Dockerfile, continuation lines joined, comments dropped."""
    text = "\n".join(
        line for line in (INFRA / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")
    )
    instructions = []
    for line in logical_lines(text):
        if line.strip():
            name, _, arguments = line.strip().partition(" ")
            instructions.append((name.upper(), arguments.strip()))
    return instructions


def exec_form(instruction: str) -> list[str]:
    values = [json.loads(a) for n, a in dockerfile_instructions() if n == instruction]
    assert len(values) == 1, f"infra/Dockerfile: expected one {instruction}, found {len(values)}"
    assert isinstance(values[0], list), f"infra/Dockerfile: {instruction} must be the JSON (exec) form"
    return values[0]


@cache
def all_commands() -> tuple[Command, ...]:
    found: list[Command] = []
    for doc in docs():
        name = doc.body.get("metadata", {}).get("name") or doc.body.get("metadata", {}).get("generateName", "")
        found += commands_in_value(doc.body, f"{doc.source}: {doc.kind or 'config'} {name}".rstrip())
    for path in sorted(INFRA.rglob("*")):
        if path.is_file() and (path.suffix in (".yaml", ".yml", ".md") or path.name == "Dockerfile"):
            for number, line in code_lines(path):
                found += commands_in_shell(line, f"{rel(path)}:{number}")
    entrypoint, cmd = exec_form("ENTRYPOINT"), exec_form("CMD")
    if entrypoint and is_cafe(entrypoint[0]):
        found.append(Command(tuple(entrypoint[1:] + cmd), "Dockerfile: ENTRYPOINT + CMD"))
    unique = {(c.words, c.where): c for c in found}
    return tuple(unique.values())


# ------------------------------------------------------------------------------------------ the real CLI


# typer 0.29 carries its own copy of click (typer._click): its objects are read by attribute, not by class.
Node = Any  # a typer (click) command or group
Param = Any  # a typer (click) option or argument


@cache
def root_command() -> Node:
    command = get_command(app)
    assert hasattr(command, "commands"), "cafe_cli.main.app is not a command group"
    return command


def is_group(node: Node) -> bool:
    return isinstance(getattr(node, "commands", None), dict)


def resolve(command: Command) -> tuple[list[str], Node, list[str]]:
    """(subcommand path, the command object, the words after the path); fails naming an unknown subcommand."""
    node = root_command()
    path: list[str] = []
    words = list(command.words)
    while is_group(node) and words and not words[0].startswith("-"):
        child = node.commands.get(words[0])
        if child is None:
            known = ", ".join(sorted(node.commands))
            pytest.fail(f"{command}: `cafe {' '.join(path)}` has no subcommand {words[0]!r} (it has: {known})")
        path.append(words.pop(0))
        node = child
    return path, node, words


@cache
def help_text(path: tuple[str, ...]) -> str:
    width = typer.rich_utils.MAX_WIDTH
    typer.rich_utils.MAX_WIDTH = 400  # one line per option, so no option name is wrapped
    try:
        result = CliRunner().invoke(app, [*path, "--help"])
    finally:
        typer.rich_utils.MAX_WIDTH = width
    assert result.exit_code == 0, f"`cafe {' '.join(path)} --help` exited {result.exit_code}: {result.output}"
    return ANSI.sub("", result.output)


def options_by_name(node: Node) -> dict[str, Param]:
    return {name: p for p in node.params if p.param_type_name == "option" for name in (*p.opts, *p.secondary_opts)}


def value_problem(param: Param, value: str) -> str | None:
    """What is wrong with `value` for the option (a choice it does not have, a number out of range), else None.
    Paths are not checked: they exist where the job runs, not here."""
    # typer's record of the parameter's Python type; fail loudly if a typer upgrade drops it, not check less.
    assert hasattr(param, "type_descriptor"), "typer's options no longer carry type_descriptor: update this test"
    annotation = param.type_descriptor.annotation
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        allowed = [str(m.value) for m in annotation]
        return None if value in allowed else f"not one of {', '.join(allowed)}"
    if annotation in (int, float):
        try:
            number = annotation(value)
        except ValueError:
            return f"not {'an integer' if annotation is int else 'a number'}"
        low, high = getattr(param, "min", None), getattr(param, "max", None)
        if (low is not None and number < low) or (high is not None and number > high):
            return f"outside {low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
    return None


@dataclass
class Parsed:
    path: list[str]
    node: Node
    options: dict[str, list[str | None]]  # the parameter's name -> the values given (None for a flag)
    positionals: list[str]


def check_command(command: Command) -> Parsed:
    """The command resolves, its --help works, its options exist, appear in the help and take their values."""
    path, node, words = resolve(command)
    text = help_text(tuple(path))
    by_name = options_by_name(node)
    options: dict[str, list[str | None]] = {}
    positionals: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--help":
            continue
        if not (word.startswith("-") and len(word) > 1):
            positionals.append(word)
            continue
        name, has_value, inline = word.partition("=")
        param = by_name.get(name)
        if param is None:
            pytest.fail(
                f"{command}: `cafe {' '.join(path)}` has no option {name} (it has: {', '.join(sorted(by_name))})"
            )
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (
            f"{command}: {name} is not in `cafe {' '.join(path)} --help`"
        )
        if param.is_flag or param.count:
            assert not has_value, f"{command}: {name} is a flag and takes no value"
            value = None
        else:
            if has_value:
                value = inline
            else:
                assert index < len(words), f"{command}: {name} needs a value"
                value = words[index]
                index += 1
            problem = value_problem(param, value)
            if problem:
                pytest.fail(f"{command}: {name} {value!r}: {problem}")
        assert param.name is not None
        options.setdefault(param.name, []).append(value)
    if "--help" not in words:
        arguments = [p for p in node.params if p.param_type_name == "argument"]
        if not any(a.nargs == -1 for a in arguments):
            assert len(positionals) <= sum(a.nargs for a in arguments), (
                f"{command}: unexpected argument(s) {positionals} for `cafe {' '.join(path)}`"
            )
        if not is_group(node):
            for param in node.params:
                if param.param_type_name == "option" and param.required and param.name not in options:
                    pytest.fail(f"{command}: the required option {max(param.opts, key=len)} is missing")
    return Parsed(path, node, options, positionals)


def one(parsed: Parsed, name: str) -> str | None:
    values = parsed.options.get(name) or [None]
    return values[-1]


# ------------------------------------------------------------------------------------ config resolution


@cache
def mounted_files() -> dict[str, str]:
    """Files the pods see through ConfigMap volumes: mountPath/key -> content, over every pod spec in infra/."""
    config_maps = {d.body["metadata"]["name"]: d.body.get("data") or {} for d in docs_of("ConfigMap")}
    files: dict[str, str] = {}
    for doc in docs():
        for _, spec in pod_specs(doc.body):
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            for container in spec["containers"]:
                for mount in container.get("volumeMounts") or []:
                    source = volumes.get(mount["name"], {}).get("configMap")
                    if source and source["name"] in config_maps:
                        for key, content in config_maps[source["name"]].items():
                            files[f"{mount['mountPath'].rstrip('/')}/{key}"] = content
    return files


def config_values(command: Command, path: str | None) -> dict[str, Any]:
    """The settings of a command's --config: a file from a mounted ConfigMap, or one in the repository."""
    if path is None:
        return {}
    if path in mounted_files():
        content = mounted_files()[path]
    elif (REPO / path).is_file():
        content = (REPO / path).read_text()
    else:
        pytest.fail(f"{command}: --config {path} is neither in a ConfigMap the pods mount nor a file in the repository")
    values = yaml.safe_load(content) or {}
    assert isinstance(values, dict), f"{command}: --config {path} is not a mapping of settings"
    return values


def data_build_config(command: Command, parsed: Parsed) -> Any:
    """The BuildConfig `cafe data build` would run, resolved as the command resolves it (recipe, file, --set)."""
    from cafe_core.settings import parse_sets
    from cafe_pipelines.build_config import apply_overrides, build_recipe

    try:
        job = build_recipe(
            one(parsed, "preset") or "tiny",
            input=one(parsed, "input") or "",
            output=one(parsed, "output") or "",
            mode=one(parsed, "mode") or "incremental",
        )
        job = apply_overrides(job, config_values(command, one(parsed, "config")))
        return apply_overrides(job, parse_sets([s for s in parsed.options.get("sets", []) if s]))
    except ValueError as exc:
        pytest.fail(f"{command}: its settings do not resolve: {exc}")


def train_config(command: Command, parsed: Parsed, tmp_path: Path) -> Any:
    """The TrainConfig `cafe train run|launch` would train, with its shard folders stood in for by empty ones."""
    from cafe_core.settings import parse_sets
    from cafe_train.config_io import config_from_dict

    values = config_values(command, one(parsed, "config"))
    shards = [s for s in parsed.options.get("shards", []) if s] or values.get("shards") or []
    values["shards"] = [tmp_path / f"shards-{i}" for i, _ in enumerate(shards)]
    for folder in values["shards"]:
        folder.mkdir(exist_ok=True)
    values["output_dir"] = one(parsed, "output") or values.get("output_dir")
    values["preset"] = one(parsed, "preset") or values.get("preset") or "tiny"
    values.update(parse_sets([s for s in parsed.options.get("sets", []) if s]))
    assert values["shards"], f"{command}: no --shards and no `shards:` in its --config"
    assert values["output_dir"], f"{command}: no --output and no `output_dir:` in its --config"
    try:
        return config_from_dict(values)
    except (ValueError, FileNotFoundError) as exc:
        pytest.fail(f"{command}: its training settings do not resolve: {exc}")


# ------------------------------------------------------------------------------------------------ tests


def test_every_yaml_file_parses_and_holds_documents() -> None:
    assert yaml_files(), "no YAML files under infra/"
    sources = {d.source.split(" > ")[0] for d in docs()}
    for path in yaml_files():
        assert rel(path) in sources, f"{rel(path)}: no YAML document in it"


def test_the_scan_finds_the_commands_it_must() -> None:
    """A scan that silently finds nothing would pass every other test: the commands the manifests exist for."""
    commands = all_commands()
    assert len(commands) >= 10, f"only {len(commands)} cafe commands found under infra/: {[str(c) for c in commands]}"

    def found(prefix: tuple[str, ...], where: str) -> bool:
        return any(c.words[: len(prefix)] == prefix and where in c.where for c in commands)

    assert found(("data", "build"), "kuberay/rayjob-build-data.yaml: RayJob")
    assert found(("data", "build"), "ConfigMap cafe-build-data-rayjob/rayjob.yaml: RayJob")
    assert found(("train", "launch"), "kuberay/rayjob-train.yaml: RayJob")
    assert found(("train", "launch"), "accelerate/multi-node.yaml:")
    assert found(("data", "build"), "ray/cluster.yaml:")
    assert found((), "ray/cluster.yaml: config")  # setup_commands
    assert found((), "Dockerfile: ENTRYPOINT")
    assert found(("data", "build"), "README.md:")
    assert found(("serve",), "kuberay/service.yaml: Deployment")
    for doc in docs_of("RayJob"):
        assert any(c.where.startswith(f"{doc.source}: RayJob") and ".spec.entrypoint" in c.where for c in commands), (
            f"{doc.source}: the RayJob's entrypoint is not a cafe command"
        )


def test_every_command_is_a_real_cafe_command() -> None:
    """`cafe PATH --help` exits 0 for each, and each option it uses is one of that command's, named in the help."""
    for command in all_commands():
        check_command(command)


@pytest.mark.slow  # imports the data engine's and training's configs (and with them torch and transformers)
def test_command_settings_resolve(tmp_path: Path) -> None:
    """`--config` files (mounted ConfigMaps), presets, modes and `--set` overrides validate with the job's config."""
    checked = 0
    for command in all_commands():
        parsed = check_command(command)
        if "--help" in command.words:
            continue
        if parsed.path == ["data", "build"]:
            data_build_config(command, parsed)
            checked += 1
        elif parsed.path in (["train", "run"], ["train", "launch"]):
            train_config(command, parsed, tmp_path)
            checked += 1
    assert checked >= 6, f"only {checked} data build / train commands had their settings resolved"


def test_rayclusters_have_what_kuberay_requires() -> None:
    clusters = docs_of("RayCluster")
    assert clusters, "no RayCluster under infra/"
    for doc in clusters:
        assert doc.body["apiVersion"] == "ray.io/v1", doc.source
        assert doc.body["metadata"].get("name"), f"{doc.source}: a RayCluster needs metadata.name"
    for where, spec in ray_cluster_specs():
        assert "headGroupSpec" in spec, f"{where}: no headGroupSpec"
        for name, group in ray_groups(spec):
            containers = group["template"]["spec"]["containers"]
            assert containers and containers[0].get("image"), f"{where}: group {name} has no ray container image"
            for key, value in (group.get("rayStartParams") or {}).items():
                assert isinstance(value, str), f"{where}: group {name} rayStartParams.{key} must be a string"
            if name != "head":
                assert group.get("groupName"), f"{where}: a worker group without groupName"
                low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31)
                assert low <= group.get("replicas", low) <= high, f"{where}: group {name} replicas outside min..max"
            for container in containers:
                limits = (container.get("resources") or {}).get("limits", {})
                requests = (container.get("resources") or {}).get("requests", {})
                if GPU in requests:
                    assert requests[GPU] == limits.get(GPU), f"{where}: group {name}: {GPU} requests != limits"
    # The long-lived cluster: a head, a CPU group and a GPU group.
    spec = next(d.body["spec"] for d in clusters if d.source == "kuberay/raycluster.yaml")
    workers = [g["template"]["spec"]["containers"][0] for _, g in ray_groups(spec)[1:]]
    assert any(gpu_limit(c) == 0 for c in workers), "kuberay/raycluster.yaml: no CPU worker group"
    assert any(gpu_limit(c) > 0 for c in workers), f"kuberay/raycluster.yaml: no worker group with a {GPU} limit"


def rayjob_clusters() -> Iterator[tuple[Doc, dict[str, Any]]]:
    """(RayJob, its rayClusterSpec) for the RayJobs that bring their own cluster."""
    for doc in docs_of("RayJob"):
        if "rayClusterSpec" in doc.body["spec"]:
            yield doc, doc.body["spec"]["rayClusterSpec"]


def test_rayjobs_have_what_kuberay_requires() -> None:
    jobs = docs_of("RayJob")
    assert len(jobs) >= 3, f"expected the build-data, train and scheduled RayJobs, found {[d.source for d in jobs]}"
    cluster_names = {d.body["metadata"]["name"] for d in docs_of("RayCluster")}
    for doc in jobs:
        body, spec = doc.body, doc.body["spec"]
        assert body["apiVersion"] == "ray.io/v1", doc.source
        assert body["metadata"].get("name") or body["metadata"].get("generateName"), f"{doc.source}: no name"
        assert isinstance(spec.get("entrypoint"), str) and spec["entrypoint"].strip(), f"{doc.source}: no entrypoint"
        if "clusterSelector" in spec:
            assert spec["clusterSelector"].get("ray.io/cluster") in cluster_names, f"{doc.source}: unknown cluster"
        else:
            assert "headGroupSpec" in spec.get("rayClusterSpec", {}), f"{doc.source}: no rayClusterSpec.headGroupSpec"


def test_rayjobs_gpu_workers_fit_their_clusters() -> None:
    """`train launch --gpu --num-workers N`: N GPUs at most in the job's cluster."""
    checked = 0
    for doc, cluster in rayjob_clusters():
        for command in commands_in_shell(doc.body["spec"]["entrypoint"], doc.source):
            parsed = check_command(command)
            if parsed.path == ["train", "launch"] and "gpu" in parsed.options:
                workers, gpus = int(one(parsed, "num_workers") or 0), cluster_gpus(cluster)
                assert workers <= gpus, f"{command}: {workers} GPU workers but the job's cluster has {gpus} GPUs"
                checked += 1
    assert checked, "no RayJob runs `cafe train launch --gpu`"


@pytest.mark.slow  # imports the data engine's config (and with it torch and transformers)
def test_rayjobs_data_stages_fit_their_clusters() -> None:
    """The resolved BuildConfig's stages (num_gpus/num_cpus x concurrency) fit in the job's cluster."""
    checked = 0
    for doc, cluster in rayjob_clusters():
        for command in commands_in_shell(doc.body["spec"]["entrypoint"], doc.source):
            parsed = check_command(command)
            if parsed.path != ["data", "build"]:
                continue
            resources = data_build_config(command, parsed).resources
            stages = [getattr(resources, f.name) for f in dataclasses.fields(resources)]
            gpus, cpus = cluster_gpus(cluster), cluster_cpus(cluster)
            wanted_gpus = sum(s.num_gpus * s.concurrency for s in stages)
            wanted_cpus = sum(s.num_cpus * s.concurrency for s in stages)
            assert wanted_gpus <= gpus, f"{command}: its stages want {wanted_gpus} GPUs, the job's cluster has {gpus}"
            assert wanted_cpus <= cpus, f"{command}: its stages want {wanted_cpus} CPUs, the job's cluster has {cpus}"
            checked += 1
    assert checked >= 2, "expected the build-data RayJob and its scheduled copy"


def test_the_scheduled_rayjob_is_the_build_data_rayjob() -> None:
    """The CronJob's copy (in its ConfigMap) and rayjob-build-data.yaml run the same job on the same cluster."""
    standalone = [d for d in docs_of("RayJob") if d.source == "kuberay/rayjob-build-data.yaml"]
    scheduled = [d for d in docs_of("RayJob") if d.source.startswith("kuberay/cronjob-build-data.yaml > ")]
    assert len(standalone) == 1 and len(scheduled) == 1
    assert scheduled[0].body["spec"] == standalone[0].body["spec"], (
        "the RayJob in cronjob-build-data.yaml's ConfigMap differs from rayjob-build-data.yaml: keep them the same"
    )


def test_cronjob_submits_the_rayjob_and_never_overlaps() -> None:
    cronjobs = docs_of("CronJob")
    assert cronjobs, "no CronJob under infra/"
    rayjob_files = {
        path for path, content in mounted_files().items() if (embedded_manifest(content) or {}).get("kind") == "RayJob"
    }
    for doc in cronjobs:
        spec = doc.body["spec"]
        assert doc.body["apiVersion"] == "batch/v1", doc.source
        assert spec["concurrencyPolicy"] == "Forbid", f"{doc.source}: concurrencyPolicy must be Forbid"
        assert len(spec["schedule"].split()) == 5, f"{doc.source}: schedule {spec['schedule']!r} is not 5 cron fields"
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        script = " ".join(" ".join(map(str, c.get("command", []) + c.get("args", []))) for c in pod["containers"])
        creates = [
            path for path in rayjob_files if re.search(rf"kubectl (create|apply) -f {re.escape(path)}\b", script)
        ]
        assert creates, f"{doc.source}: the CronJob's container does not create a RayJob from a mounted ConfigMap"
        # It waits for the RayJob's end, or Forbid would only stop two `kubectl create`s from overlapping.
        assert "jobDeploymentStatus" in script, f"{doc.source}: the CronJob's pod must follow the RayJob to its end"
        account = pod.get("serviceAccountName")
        bound = {
            b.body["roleRef"]["name"]
            for b in docs_of("RoleBinding")
            if any(s.get("kind") == "ServiceAccount" and s.get("name") == account for s in b.body["subjects"])
        }
        rules = [r for role in docs_of("Role") if role.body["metadata"]["name"] in bound for r in role.body["rules"]]
        assert any(
            "ray.io" in r["apiGroups"] and "rayjobs" in r["resources"] and "create" in r["verbs"] for r in rules
        ), f"{doc.source}: service account {account!r} may not create rayjobs"


def test_pods_mount_what_they_name_and_ray_pods_agree() -> None:
    """Mounts name the pod's volumes, volumes name objects defined in infra/, and every Ray pod has the same
    image, the shared volume at one path, and CAFE_MODEL_CACHE under it."""
    config_maps = {d.body["metadata"]["name"] for d in docs_of("ConfigMap")}
    claims = {d.body["metadata"]["name"] for d in docs_of("PersistentVolumeClaim")}
    for doc in docs():
        for where, spec in pod_specs(doc.body):
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            for container in spec["containers"]:
                for mount in container.get("volumeMounts") or []:
                    assert mount["name"] in volumes, f"{doc.source}{where}: mount {mount['name']!r} has no volume"
            for volume in volumes.values():
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps, f"{doc.source}{where}: {volume}"
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{doc.source}{where}: {volume}"
    images, data_paths, caches = set(), set(), set()
    for where, spec in ray_cluster_specs():
        for name, group in ray_groups(spec):
            pod = group["template"]["spec"]
            container = pod["containers"][0]
            images.add(container["image"])
            shared = [v["name"] for v in pod.get("volumes") or [] if "persistentVolumeClaim" in v]
            mounts = [m["mountPath"] for m in container.get("volumeMounts") or [] if m["name"] in shared]
            assert mounts, f"{where}: group {name} does not mount the shared volume"
            data_paths.update(mounts)
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            assert env.get("CAFE_MODEL_CACHE"), f"{where}: group {name} does not set CAFE_MODEL_CACHE"
            caches.add(env["CAFE_MODEL_CACHE"])
    assert len(images) == 1 and CAFE_IMAGE.search(images.pop()), (
        f"the Ray pods' images differ or are not cafe's: {images}"
    )
    assert len(data_paths) == 1, f"the shared volume is mounted at different paths: {data_paths}"
    (data_path,) = data_paths
    assert len(caches) == 1 and caches.pop().startswith(data_path.rstrip("/") + "/"), (
        "CAFE_MODEL_CACHE differs or is not shared"
    )


def mount_of(container: dict[str, Any], pod: dict[str, Any], path: str) -> tuple[str, dict[str, Any]]:
    """(the mountPath holding `path`, the pod volume mounted there): the deepest mount `path` lies under."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = [
        m for m in container.get("volumeMounts") or [] if (path + "/").startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert mounts, f"{path} is on no volume the container mounts"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    return mount["mountPath"], volumes[mount["name"]]


def test_the_service_deployment_serves_the_job_api_on_the_ray_cluster() -> None:
    """kuberay/service.yaml: one `cafe serve` pod (never two on one SQLite store), reachable through its Service,
    probed on the token-free /health, its token from a Secret, its jobs on the RayCluster's client port, its
    store on a volume of its own and its job folders and data root on the shared volume the Ray pods mount."""
    [doc] = [d for d in docs_of("Deployment") if d.body["metadata"]["name"] == "cafe-service"]
    spec = doc.body["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", "SQLite has one writer: 1 pod, Recreate"
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert CAFE_IMAGE.search(container["image"]) and "command" not in container  # args go to ENTRYPOINT cafe
    [command] = [c for c in all_commands() if c.where.startswith(doc.source) and c.words[:1] == ("serve",)]
    parsed = check_command(command)
    assert one(parsed, "host") == "0.0.0.0", "the Service reaches the pod on its pod IP, not on 127.0.0.1"
    assert "token" not in parsed.options, "a token on the command line shows in `ps` and the manifest"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(one(parsed, "port"))
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    env = {e["name"]: e for e in container["env"]}
    assert set(env["CAFE_SERVICE_TOKEN"]) == {"name", "valueFrom"}
    assert env["CAFE_SERVICE_TOKEN"]["valueFrom"]["secretKeyRef"]["key"]
    # RAY_ADDRESS: Ray Client on the long-lived cluster's head service (KubeRay names it CLUSTER-head-svc).
    clusters = {d.body["metadata"]["name"]: d.body["spec"] for d in docs_of("RayCluster")}
    address = re.fullmatch(r"ray://([a-z0-9-]+)-head-svc:(\d+)", env["RAY_ADDRESS"]["value"])
    assert address and address[1] in clusters, env["RAY_ADDRESS"]
    head = clusters[address[1]]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": int(address[2]), "name": "client"} in head["ports"]
    claims = {d.body["metadata"]["name"]: d.body["spec"] for d in docs_of("PersistentVolumeClaim")}
    _, db_volume = mount_of(container, pod, str(Path(one(parsed, "db")).parent))
    assert claims[db_volume["persistentVolumeClaim"]["claimName"]]["accessModes"] == ["ReadWriteOnce"]
    ray_pod = clusters[address[1]]["headGroupSpec"]["template"]["spec"]
    ray_mounts = {m["name"]: m["mountPath"] for m in ray_pod["containers"][0]["volumeMounts"]}
    ray_claims = {
        v["persistentVolumeClaim"]["claimName"]: ray_mounts[v["name"]]
        for v in ray_pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    for option in ("jobs_dir", "roots"):
        mount_path, volume = mount_of(container, pod, one(parsed, option))
        claim = volume["persistentVolumeClaim"]["claimName"]
        assert ray_claims.get(claim) == mount_path, (
            f"--{option} must be on the volume the Ray pods mount, at their path"
        )
    [service] = [d.body["spec"] for d in docs_of("Service") if d.body["metadata"]["name"] == "cafe-service"]
    labels = spec["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items() and spec["selector"]["matchLabels"] == service["selector"]
    assert [p["targetPort"] for p in service["ports"]] == ["http"]


@pytest.mark.slow  # imports accelerate's launcher and cafe's (torch)
def test_every_ray_cluster_and_client_uses_ray_token_authentication() -> None:
    """No Ray cluster of infra/ is an open door: KubeRay's token mode on every cluster, one Secret, the
    service's Ray Client with the same token, and `ray up` starting every node with token mode."""
    secrets = set()
    for where, spec in ray_cluster_specs():
        options = spec.get("authOptions") or {}
        assert options.get("mode") == "token", f"{where}: set authOptions: {{mode: token, secretName: ...}}"
        secrets.add(options.get("secretName"))
    assert len(secrets) == 1 and None not in secrets, f"every cluster should name one token Secret: {secrets}"
    [secret] = secrets
    [doc] = [d for d in docs_of("Deployment") if d.body["metadata"]["name"] == "cafe-service"]
    env = {e["name"]: e for e in doc.body["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    # KubeRay's Secret holds the token under auth_token
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}
    assert secret in (INFRA / "README.md").read_text(), "infra/README.md must say how to create the token Secret"
    raw = yaml.safe_load((INFRA / "ray" / "cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts), key
    assert "~/.ray/auth_token" in raw["file_mounts"], "ray up must copy the token to every node"


def test_accelerate_config_loads_and_launches_with_accelerate() -> None:
    """accelerate's own loader reads the file, and `accelerate launch`'s argument checks accept the command line
    cafe's launcher builds with it (cafe_train.launch_accelerate.accelerate_command)."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType

    from cafe_train.launch_accelerate import accelerate_command

    path = INFRA / "accelerate" / "multi-node.yaml"
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == DistributedType.MULTI_GPU
    assert (config.num_machines, config.machine_rank, config.num_processes) == (2, 0, 16)
    assert config.main_process_ip and config.main_process_port
    assert config.mixed_precision == "bf16"

    line = accelerate_command(Path("train-config.json"), 16, accelerate_config=path, cpu=False, mixed_precision="bf16")
    args = launch_command_parser().parse_args(line[line.index("accelerate.commands.launch") + 1 :])
    args, _, _ = _validate_launch_command(args)
    assert args.multi_gpu and args.num_machines == 2 and args.machine_rank == 0 and args.num_processes == 16
    assert args.num_processes // args.num_machines == 8  # processes per machine

    uses = [c for c in all_commands() if "--accelerate-config" in c.words]
    assert uses, "no command uses the accelerate config"
    for command in uses:
        parsed = check_command(command)
        assert one(parsed, "backend") == "accelerate", f"{command}: --accelerate-config needs --backend accelerate"
        assert int(one(parsed, "num_workers") or 0) == config.num_processes, (
            f"{command}: --num-workers != num_processes"
        )


def test_ray_cluster_launcher_config_validates_with_ray() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = INFRA / "ray" / "cluster.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["provider"]["type"] in ("aws", "gcp")
    validate_config(prepare_config(copy.deepcopy(raw)))  # Ray's schema, after Ray fills its provider defaults
    node_types = raw["available_node_types"]
    assert raw["head_node_type"] in node_types
    assert len([n for n in node_types if n != raw["head_node_type"]]) >= 2, "expected CPU and GPU worker types"
    assert any("ray start --head" in c for c in raw["head_start_ray_commands"])
    assert any("ray start --address" in c for c in raw["worker_start_ray_commands"])
    setup = "\n".join(raw["setup_commands"])
    assert "requirements.lock" in setup and "--no-deps" in setup, "setup_commands must install the lock, then cafe"


def test_dockerfile_installs_the_lock_then_cafe_as_a_non_root_user() -> None:
    instructions = dockerfile_instructions()
    names = [n for n, _ in instructions]
    assert "python:3.11-slim" in " ".join(a for n, a in instructions if n in ("ARG", "FROM"))
    assert any(n == "COPY" and "requirements.lock" in a for n, a in instructions), "COPY requirements.lock"
    runs = [(i, a) for i, (n, a) in enumerate(instructions) if n == "RUN"]
    lock = [i for i, a in runs if re.search(r"pip install .*-r \S*requirements\.lock", a)]
    project = [i for i, a in runs if re.search(r"pip install .*--no-deps", a)]
    assert lock and project and lock[0] < project[0], "pip install -r requirements.lock, then pip install --no-deps ."
    users = [a for n, a in instructions if n == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    assert names.index("USER") > project[0], "USER after the installs"
    assert exec_form("ENTRYPOINT") == ["cafe"]


def test_dockerignore_keeps_outputs_out_and_sources_in() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/") for p in patterns)

    for path in (
        ".venv",
        "demo-output",
        "test-artifacts",
        ".pytest_cache",
        ".ruff_cache",
        "packages/core/x/__pycache__",
    ):
        assert ignored(path), f".dockerignore lets {path} into the image's build context"
    sources = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    for path in ["pyproject.toml", "requirements.lock", *sources]:
        assert not ignored(path), f".dockerignore drops {path}, which `pip install --no-deps .` in the image needs"


def test_the_image_entrypoint_runs() -> None:
    """The console script the image's ENTRYPOINT names, run as a process: `cafe` + the image's CMD."""
    cafe = Path(sys.executable).parent / "cafe"
    assert cafe.is_file(), f"no `cafe` console script next to {sys.executable}"
    result = subprocess.run([str(cafe), *exec_form("CMD")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_infra_readme_names_every_file() -> None:
    text = (INFRA / "README.md").read_text()
    for path in sorted(INFRA.rglob("*")):
        if path.is_file() and path.name != "README.md":
            assert rel(path) in text or path.name in text, f"infra/README.md does not mention {rel(path)}"

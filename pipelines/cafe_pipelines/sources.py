"""Where a build job's inputs come from: a folder, a manifest, or existing WebDataset shards.

Listing is cheap and happens in the driver: it yields `InputRef`s (ids and locations, no
pixels); the decode stage reads the bytes. Every listed input gets a status row, so a file
the job refuses (a link out of the input root, a FIFO) is still listed, with the reason it was refused.

    folder     photos/                         every image file below, recursively
    manifest   inputs.parquet | inputs.jsonl   rows with `path` (local), optional `id`, `caption`
    shards     data/{00000..00009}.tar         img2dataset-style tars: KEY.jpg (+ KEY.txt caption)

Roots: every file a job reads must resolve inside a root. A folder is its own root (links leading
out of it, to a file or a folder, are refused). A manifest's paths (relative ones taken from the
manifest's folder) must resolve inside `roots` (`--input-root`, what the training service passes:
its data roots), or with no roots given, inside the manifest's folder; `allow_outside_root` lifts
that for a manifest the user trusts. A path outside gets the reason `input.outside_root` and is
never opened. Tar shards are held to `roots` when roots are given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import pyarrow as pa
import pyarrow.parquet as pq

from cafe_core.tario import TarCorruptError, iter_tar_entries
from cafe_pipelines.decoding import file_kind

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
WDS_IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
WDS_CAPTION_SUFFIXES = ("txt", "caption")
MANIFEST_SUFFIXES = (".parquet", ".jsonl", ".json")
WIDEN_ROOTS = "cafe data build --input-root DIR widens them; --allow-outside-root lifts them"


@dataclass(frozen=True)
class InputRef:
    """One input: its stable id, where its bytes are, and a caption if the source has one.

    input_key: stable across runs (a path relative to the input root, a manifest id, or
        `tarname/key`): it decides the output key and what incremental runs skip.
    path: the file to read; with `size` >= 0, read `size` bytes at `offset` inside it (a tar member).
    root: the folder the file must resolve inside ("" = no restriction).
    refused: a reason code when listing already refused the input (e.g. `input.outside_root`).
    detail: why listing refused it, for the status row's error text.
    """

    input_key: str
    uri: str
    path: str
    root: str = ""
    offset: int = 0
    size: int = -1
    caption: str = ""
    refused: str = ""
    detail: str = ""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_roots(roots: Sequence[str | Path]) -> tuple[Path, ...]:
    """The input roots, resolved; ValueError naming one that is not an existing folder."""
    resolved = []
    for root in roots:
        path = Path(root).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"input root {root}: not an existing folder (--input-root takes a folder)")
        resolved.append(path)
    return tuple(resolved)


def _root_of(path: Path, roots: Sequence[Path]) -> Path | None:
    """The root `path` resolves inside (symlinks followed), or None."""
    resolved = path.resolve()
    return next((root for root in roots if _inside(resolved, root)), None)


def _describe(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots)


def _check_folder_in_roots(folder: Path, roots: Sequence[Path]) -> None:
    if roots and _root_of(folder, roots) is None:
        raise ValueError(f"--input {folder}: resolves outside the input roots ({_describe(roots)}); {WIDEN_ROOTS}")


def _file_ref(path: Path, root: Path) -> InputRef:
    """A file below a folder input: refused when it leads out of the folder or is not a regular file
    (checked by stat, never by opening: opening a FIFO blocks until a writer comes)."""
    relative = path.relative_to(root).as_posix()
    ref = InputRef(relative, path.as_uri(), str(path), root=str(root))
    if not _inside(path.resolve(), root):
        return _refuse(ref, "input.outside_root", f"{path} resolves outside {root}")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ref  # gone (or a dangling link): the decode stage records it as input.missing
    if not stat.S_ISREG(mode):
        detail = f"{path} is {file_kind(mode)}, not a regular file; only regular files are read"
        return _refuse(ref, "input.not_regular_file", detail)
    return ref


def _refuse(ref: InputRef, reason: str, detail: str) -> InputRef:
    return dataclasses.replace(ref, refused=reason, detail=detail)


def folder_inputs(folder: str | Path, roots: Sequence[str | Path] = ()) -> Iterator[InputRef]:
    """Image files below `folder`, sorted; links that resolve outside the folder (to a file or a
    folder) and files that are not regular (FIFOs, sockets, devices) are listed as refused.

    With `roots`, the folder itself must lie inside one of them."""
    root = Path(folder).resolve()
    _check_folder_in_roots(root, resolve_roots(roots))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        refs = []
        walked = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            path = here / name
            if not path.is_symlink():
                walked.append(name)
            elif not _inside(path.resolve(), root):
                # os.walk does not follow a link to a folder; one leading out gets a row, as a linked file
                # does, so the run report shows it. One staying inside is listed where it points.
                ref = InputRef(path.relative_to(root).as_posix(), path.as_uri(), str(path), root=str(root))
                refs.append(_refuse(ref, "input.outside_root", f"{path} is a link to a folder outside {root}"))
        dirnames[:] = walked
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            refs.append(_file_ref(here / name, root))
        yield from sorted(refs, key=lambda ref: ref.input_key)


def _jsonl_rows(manifest: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) per non-blank line; ValueError naming the file and line of a line that is not JSON."""
    with open(manifest, "rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{manifest}: line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{where} is not UTF-8 ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except (json.JSONDecodeError, RecursionError) as exc:
                problem = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise ValueError(
                    f'{where} is not JSON ({problem}); each line is one object, e.g. {{"path": "photos/dog.jpg"}}'
                ) from exc
            yield where, row


def _parquet_rows(manifest: Path) -> Iterator[tuple[str, Any]]:
    try:
        rows = pq.read_table(manifest).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{manifest}: not a readable parquet file ({exc})") from exc
    for number, row in enumerate(rows, 1):
        yield f"{manifest}: row {number}", row


def manifest_inputs(
    manifest: str | Path, roots: Sequence[str | Path] = (), allow_outside_root: bool = False
) -> Iterator[InputRef]:
    """Rows of a parquet or jsonl manifest: `path` (absolute, or relative to the manifest's folder),
    optional `id` and `caption`. A path that resolves outside `roots` (none given: the manifest's
    folder) is refused as `input.outside_root`, unless `allow_outside_root`. ValueError naming the
    file and the row (jsonl: the line) for a row that is not an object with a string `path`."""
    manifest = Path(manifest)
    if manifest.suffix == ".parquet":
        rows = _parquet_rows(manifest)
    elif manifest.suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(manifest)
    else:
        raise ValueError(f"{manifest}: a manifest must be .parquet or .jsonl")
    base = manifest.parent.resolve()
    allowed = resolve_roots(roots) or (base,)
    for where, row in rows:
        if not isinstance(row, dict):
            raise ValueError(f'{where} is not an object (got {row!r}); give e.g. {{"path": "photos/dog.jpg"}}')
        text = row.get("path")
        if not isinstance(text, str) or not text.strip() or "\x00" in text:
            raise ValueError(
                f"{where} has no string `path` (got {row!r}); give the image's path, absolute or "
                "relative to the manifest's folder"
            )
        path = Path(text)
        absolute = path if path.is_absolute() else base / path
        input_key = str(row.get("id") or text)
        caption = str(row.get("caption") or "")
        if allow_outside_root:
            yield InputRef(input_key, absolute.as_uri(), str(absolute), caption=caption)
            continue
        root = _root_of(absolute, allowed)
        ref = InputRef(input_key, absolute.as_uri(), str(absolute), str(root or allowed[0]), caption=caption)
        if root is None:
            detail = f"{text} resolves outside the input roots ({_describe(allowed)}); {WIDEN_ROOTS}"
            ref = _refuse(ref, "input.outside_root", detail)
        yield ref


def _tar_paths(pattern: str) -> list[Path]:
    """The tars a pattern names, absolute: relative ones are taken from the current folder now, so
    they still name the same files in Ray workers and can be written as file URIs."""
    return [Path(text).absolute() for text in braceexpand.braceexpand(pattern)]


def shard_inputs(
    pattern: str, roots: Sequence[str | Path] = (), allow_outside_root: bool = False
) -> Iterator[InputRef]:
    """Image members of WebDataset tars (img2dataset layout), located by offset for later reads.

    `pattern` is a tar or a brace pattern (`data/c-{00000..00099}.tar`), absolute or relative. With
    `roots` (and not `allow_outside_root`) every tar must resolve inside one of them."""
    allowed = () if allow_outside_root else resolve_roots(roots)
    for tar in _tar_paths(pattern):
        root = _root_of(tar, allowed) if allowed else None
        if allowed and root is None:
            raise ValueError(
                f"{tar} (from --input {pattern}): resolves outside the input roots "
                f"({_describe(allowed)}); {WIDEN_ROOTS}"
            )
        try:
            mode = os.stat(tar).st_mode
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{tar}: no such shard (from {pattern})") from exc
        if not stat.S_ISREG(mode):
            raise ValueError(f"{tar} (from {pattern}): {file_kind(mode)}, not a regular file; a shard is a .tar file")
        with open(tar, "rb") as f:
            entries = {}
            try:
                for name, offset, size in iter_tar_entries(f):
                    key, _, suffix = name.rpartition("/")[2].partition(".")
                    entries.setdefault(key, {})[suffix.lower()] = (offset, size)
            except TarCorruptError as exc:
                raise ValueError(f"{tar}: not a readable tar ({exc}); check it with `tar tf`") from exc
            for key in sorted(entries):
                members = entries[key]
                image = next((s for s in WDS_IMAGE_SUFFIXES if s in members), None)
                if image is None:
                    continue
                caption = ""
                for suffix in WDS_CAPTION_SUFFIXES:
                    if suffix in members:
                        offset, size = members[suffix]
                        f.seek(offset)
                        caption = f.read(size).decode("utf-8", errors="replace").strip()
                        break
                offset, size = members[image]
                uri = f"{tar.as_uri()}#{key}.{image}"
                yield InputRef(
                    f"{tar.name}/{key}", uri, str(tar), str(root or ""), offset=offset, size=size, caption=caption
                )


def is_shard_pattern(text: str) -> bool:
    return "{" in text or text.endswith(".tar")


def list_inputs(
    source: str | Path, roots: Sequence[str | Path] = (), allow_outside_root: bool = False
) -> Iterator[InputRef]:
    """Inputs of a source, picked by its form: a folder, a manifest file, or tar shards (see the
    module's docstring for `roots` and `allow_outside_root`)."""
    text = str(source)
    if is_shard_pattern(text):
        return shard_inputs(text, roots, allow_outside_root)
    path = Path(text)
    if path.is_dir():
        return folder_inputs(path, roots)
    if path.is_file() and path.suffix in MANIFEST_SUFFIXES:
        return manifest_inputs(path, roots, allow_outside_root)
    raise ValueError(
        f"--input {text!r}: expected a folder of images, a manifest (.parquet or .jsonl), "
        "or WebDataset shards (a .tar or a brace pattern like data/{00000..00009}.tar)"
    )


def paths_kept_apart(
    source: str, roots: Sequence[str] = (), allow_outside_root: bool = False
) -> list[tuple[str, Path, str]]:
    """(what, path, hint) of each place a build's output must keep apart from (cafe_core.apart), by
    the source's form alone, without listing: a folder; a manifest file, and with no roots given its
    folder (the root its paths must stay in); each tar of a pattern."""
    if is_shard_pattern(source):
        return [("input shard", tar, "") for tar in _tar_paths(source)]
    path = Path(source)
    if path.suffix in MANIFEST_SUFFIXES and not path.is_dir():
        kept = [("manifest", path, "")]
        if not roots and not allow_outside_root:
            hint = "the manifest's folder is the root its paths must stay in (or name the roots: --input-root DIR)"
            kept.append(("manifest's folder", path.parent, hint))
        return kept
    return [("input folder" if path.is_dir() else "input", path, "")]

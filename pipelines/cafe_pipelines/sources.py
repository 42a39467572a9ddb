"""Where a build job's inputs come from: a folder, a manifest, or existing WebDataset shards.

Listing is cheap and happens in the driver: it yields `InputRef`s (ids and locations, no
pixels); the decode stage reads the bytes. Every listed input gets a status row, so a file
the job refuses (a link out of the input root) is still listed, with the reason it was refused.

    folder     photos/                         every image file below, recursively
    manifest   inputs.parquet | inputs.jsonl   rows with `path` (local), optional `id`, `caption`
    shards     data/{00000..00009}.tar         img2dataset-style tars: KEY.jpg (+ KEY.txt caption)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import braceexpand
import pyarrow.parquet as pq

from cafe_core.tario import TarCorruptError, iter_tar_entries

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
WDS_IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
WDS_CAPTION_SUFFIXES = ("txt", "caption")


@dataclass(frozen=True)
class InputRef:
    """One input: its stable id, where its bytes are, and a caption if the source has one.

    input_key: stable across runs (a path relative to the input root, a manifest id, or
        `tarname/key`): it decides the output key and what incremental runs skip.
    path: the file to read; with `size` >= 0, read `size` bytes at `offset` inside it (a tar member).
    root: the folder the file must resolve inside ("" = no restriction).
    refused: a reason code when listing already refused the input (e.g. `input.outside_root`).
    """

    input_key: str
    uri: str
    path: str
    root: str = ""
    offset: int = 0
    size: int = -1
    caption: str = ""
    refused: str = ""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def folder_inputs(root: str | Path) -> Iterator[InputRef]:
    """Image files below `root`, sorted; symlinks that resolve outside the root are refused."""
    root = Path(root).resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            resolved = path.resolve()
            refused = "" if _inside(resolved, root) else "input.outside_root"
            yield InputRef(relative, path.as_uri(), str(path), root=str(root), refused=refused)


def manifest_inputs(manifest: str | Path) -> Iterator[InputRef]:
    """Rows of a parquet or jsonl manifest: `path` (absolute, or relative to the manifest's
    folder, which is then the root paths must stay in), optional `id` and `caption`."""
    manifest = Path(manifest)
    if manifest.suffix == ".parquet":
        rows = pq.read_table(manifest).to_pylist()
    elif manifest.suffix in (".jsonl", ".json"):
        with open(manifest) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        raise ValueError(f"{manifest}: a manifest must be .parquet or .jsonl")
    base = manifest.parent.resolve()
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise ValueError(f"{manifest}: row {number} has no string `path` (got {row!r})")
        path = Path(row["path"])
        absolute = path if path.is_absolute() else base / path
        # Relative paths must stay below the manifest's folder; absolute ones were chosen explicitly.
        root = "" if path.is_absolute() else str(base)
        refused = "" if not root or _inside(absolute.resolve(), base) else "input.outside_root"
        input_key = str(row.get("id") or row["path"])
        caption = str(row.get("caption") or "")
        yield InputRef(input_key, absolute.as_uri(), str(absolute), root, caption=caption, refused=refused)


def shard_inputs(pattern: str) -> Iterator[InputRef]:
    """Image members of WebDataset tars (img2dataset layout), located by offset for later reads."""
    for tar in (Path(p) for p in braceexpand.braceexpand(pattern)):
        if not tar.is_file():
            raise FileNotFoundError(f"{tar}: no such shard (from {pattern})")
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
                yield InputRef(f"{tar.name}/{key}", uri, str(tar), offset=offset, size=size, caption=caption)


def list_inputs(source: str | Path) -> Iterator[InputRef]:
    """Inputs of a source, picked by its form: a folder, a manifest file, or tar shards."""
    text = str(source)
    if "{" in text or text.endswith(".tar"):
        return shard_inputs(text)
    path = Path(text)
    if path.is_dir():
        return folder_inputs(path)
    if path.is_file() and path.suffix in (".parquet", ".jsonl", ".json"):
        return manifest_inputs(path)
    raise ValueError(
        f"--input {text!r}: expected a folder of images, a manifest (.parquet or .jsonl), "
        "or WebDataset shards (a .tar or a brace pattern like data/{00000..00009}.tar)"
    )

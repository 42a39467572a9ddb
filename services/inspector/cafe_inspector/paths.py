"""Paths the browser is asked for, kept inside DIR.

A set is named by its folder relative to DIR (`"."` when DIR is itself a set), as the set
listing gives it. Anything else is refused before the disk is touched: absolute paths, `..`,
backslashes, NUL, empty parts. A name that passes can still lead out through a symlink, so
every path is resolved and checked to lie inside the resolved DIR before it is opened.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from cafe_core.layout import find_prefixes
from cafe_inspector.errors import BadRequest, NotFound

MAX_SET_DEPTH = 3  # as `cafe shards ls`: sets are found up to three folders below DIR
MAX_SET_ID_CHARS = 1024


def check_set_id(set_id: str) -> PurePosixPath:
    """The set id as relative path parts; BadRequest for anything that could leave DIR."""
    if not set_id or len(set_id) > MAX_SET_ID_CHARS:
        raise BadRequest(f"set: {set_id[:80]!r} is not a set name; use a `path` from /api/sets (e.g. '.' or 'round-1')")
    if "\x00" in set_id or "\\" in set_id:
        raise BadRequest(f"set: {set_id!r} holds a NUL or a backslash; use '/' between folder names")
    if set_id.startswith("/") or set_id.startswith("~"):
        raise BadRequest(f"set: {set_id!r} is absolute; name the set relative to the served folder")
    if set_id == ".":
        return PurePosixPath(".")
    parts = set_id.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadRequest(f"set: {set_id!r} has an empty, '.' or '..' part; name a folder below the served folder")
    return PurePosixPath(*parts)


def inside(root: Path, path: Path) -> Path:
    """`path` resolved (symlinks followed); NotFound when that lands outside `root` (already resolved)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise NotFound(f"{path.name}: leads outside the served folder (a symlink?); only files inside it are served")
    return resolved


def resolve_folder(root: Path, set_id: str) -> Path:
    """The folder `set_id` names under `root` (resolved); NotFound when it leads outside `root`."""
    resolved = (root / check_set_id(set_id)).resolve()
    if not resolved.is_relative_to(root):
        raise NotFound(f"set: {set_id!r} is not a shard set under the served folder")
    return resolved


def require_set(folder: Path, set_id: str) -> Path:
    """`folder` when it holds a shard set (it lists the folder: call once per set, not per request)."""
    if not folder.is_dir() or not find_prefixes(folder):
        raise NotFound(f"set: {set_id!r} is not a shard set under the served folder; /api/sets lists them")
    return folder


def find_sets(root: Path, depth: int = MAX_SET_DEPTH) -> list[Path]:
    """Set folders at or below `root` (resolved paths), never following a link out of `root`."""
    return _find(root, root, depth)


def _find(root: Path, folder: Path, depth: int) -> list[Path]:
    if find_prefixes(folder):
        return [folder]
    if depth == 0:
        return []
    found: list[Path] = []
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []  # an unreadable folder holds no set we can show
    for child in children:
        resolved = child.resolve()
        if resolved.is_relative_to(root) and resolved != folder:
            found += _find(root, child, depth - 1)
    return found


def set_id_of(root: Path, folder: Path) -> str:
    """The id the API uses for the set in `folder` (a path below `root`)."""
    relative = folder.relative_to(root)
    return "." if relative == Path(".") else relative.as_posix()

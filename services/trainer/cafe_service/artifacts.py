"""What a job wrote: the files under its output folder, with their sizes.

Symlinks are listed as links, never followed (a link in an output folder may point anywhere).
At most `max_files` are listed, in path order; `truncated` says when there are more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_FILES = 10_000


def list_artifacts(root: Path, max_files: int = MAX_FILES) -> dict[str, Any]:
    files: list[dict[str, Any]] = []
    total_bytes, truncated = 0, False
    if root.is_dir() and not root.is_symlink():
        for folder, dirs, names in os.walk(root, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                path = Path(folder) / name
                if len(files) >= max_files:
                    truncated = True
                    break
                info = path.lstat()
                entry = {"path": path.relative_to(root).as_posix(), "bytes": info.st_size}
                if path.is_symlink():
                    entry["symlink"] = True
                else:
                    total_bytes += info.st_size
                files.append(entry)
            if truncated:
                break
    return {
        "root": str(root),
        "exists": root.is_dir(),
        "files": files,
        "num_files": len(files),
        "total_bytes": total_bytes,
        "truncated": truncated,
    }

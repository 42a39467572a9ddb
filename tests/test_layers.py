"""The import layers of DESIGN.md at run time (import-linter checks them statically in `make test`)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "torchvision", "ray", "diffusers", "transformers", "accelerate")


def _modules_loaded_by(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_cafe_core_loads_no_heavy_framework() -> None:
    every_module = (
        "import cafe_core, cafe_core.validate, cafe_core.stats, cafe_core.contact, cafe_core.lookup, cafe_core.index"
    )
    assert _modules_loaded_by(every_module).isdisjoint(HEAVY)


def test_shards_cli_loads_no_heavy_framework() -> None:
    """`cafe shards ...` is used on login nodes and laptops: it must start without torch or ray."""
    assert _modules_loaded_by("import cafe_cli.main").isdisjoint(HEAVY)

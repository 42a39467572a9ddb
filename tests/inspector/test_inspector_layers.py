"""The inspector's place in the layers (DESIGN.md: services/inspector -> packages/core only), at run time."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "torchvision", "ray", "diffusers", "transformers", "accelerate")
OTHER_CAFE = ("cafe_vision", "cafe_pipelines", "cafe_cli")
WEB = ("fastapi", "starlette", "uvicorn", "cafe_inspector")


def modules_loaded_by(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_inspector_loads_cafe_core_only() -> None:
    loaded = modules_loaded_by("import cafe_inspector, cafe_inspector.app, cafe_inspector.catalog")
    assert "cafe_core" in loaded
    assert loaded.isdisjoint(HEAVY + OTHER_CAFE)


def test_the_cli_loads_the_web_stack_only_when_serving() -> None:
    """`cafe shards ...` starts fast: importing the CLI does not import fastapi or the inspector."""
    assert modules_loaded_by("import cafe_cli.main").isdisjoint(WEB)

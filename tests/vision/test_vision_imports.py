"""`import cafe_vision` stays light: the numpy-only modules must not drag torch in through the package."""

from __future__ import annotations

import subprocess
import sys


def test_package_import_loads_no_torch() -> None:
    code = "import cafe_vision, sys; print('torch' in sys.modules, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]

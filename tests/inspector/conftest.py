"""Fixtures of the shard browser's tests: a served folder of tiny real sets, and clients on it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from inspector_sets import TOKEN, build_tree

from cafe_inspector import create_app


@pytest.fixture(scope="session")
def pristine_tree(tmp_path_factory) -> Path:
    """Built once; tests that may write (flags) copy it first through `served`."""
    return build_tree(tmp_path_factory.mktemp("inspector"))


@pytest.fixture
def served(pristine_tree: Path, tmp_path: Path) -> Path:
    """A private copy of the served folder (and the `outside` folder beside it)."""
    shutil.copytree(pristine_tree.parent, tmp_path / "tree", symlinks=True)
    return tmp_path / "tree" / "served"


@pytest.fixture
def client(served: Path) -> TestClient:
    return TestClient(create_app(served))


@pytest.fixture
def token_client(served: Path) -> TestClient:
    return TestClient(create_app(served, token=TOKEN))

"""The environment cafe gives a Ray it starts itself: loopback unless exposure is asked for, a token
always when exposed (the sockets themselves are checked in tests/service/test_service_ray_loopback.py)."""

from __future__ import annotations

import pytest

from cafe_core.local_ray import EXPOSE_VARIABLE, LOOPBACK_VARIABLE, prepare_local_ray


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (EXPOSE_VARIABLE, LOOPBACK_VARIABLE, "RAY_AUTH_MODE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_local_ray_is_loopback_and_keeps_ray_s_token_default(clean: pytest.MonkeyPatch) -> None:
    import os

    prepare_local_ray()
    assert os.environ[LOOPBACK_VARIABLE] == "0"
    assert "RAY_AUTH_MODE" not in os.environ  # unset: Ray's own default for a new local Ray is token


def test_exposing_a_ray_keeps_ray_s_own_node_ip_and_needs_the_token(clean: pytest.MonkeyPatch) -> None:
    import os

    clean.setenv(EXPOSE_VARIABLE, "1")
    prepare_local_ray()
    assert LOOPBACK_VARIABLE not in os.environ
    clean.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(RuntimeError, match="token authentication"):
        prepare_local_ray()


def test_a_bad_exposure_value_names_the_variable(clean: pytest.MonkeyPatch) -> None:
    clean.setenv(EXPOSE_VARIABLE, "maybe")
    with pytest.raises(ValueError, match=EXPOSE_VARIABLE):
        prepare_local_ray()

"""A real preset whose weights are not in the local Hugging Face cache fails at once with the download command."""

from __future__ import annotations

import huggingface_hub.constants
import pytest

from cafe_model.load import load_model


def test_missing_hub_weights_name_the_download_command(monkeypatch, tmp_path) -> None:
    # Offline mode (what HF_HUB_OFFLINE=1 sets): fail on the first missing file instead of retrying the network.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache, whatever this machine holds
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(OSError, match="hf download stable-diffusion-v1-5/stable-diffusion-v1-5"):
        load_model("sd15")

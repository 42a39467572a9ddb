"""Helpers of the cafe_model tests."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cafe_model.customization_model import CustomizationModel


def perturb_trainable(model: CustomizationModel, seed: int) -> CustomizationModel:
    """Stand-in for training: move every trainable tensor off its init, deterministically."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.trainable_parameters():
            parameter.add_(0.5 * torch.randn(parameter.shape, generator=generator))
    return model


def pixel_difference(first: Image.Image, second: Image.Image) -> int:
    """The largest absolute difference of two images' 8-bit values."""
    return int(np.abs(np.asarray(first, dtype=np.int16) - np.asarray(second, dtype=np.int16)).max())

"""Reference images -> frozen features -> K reference tokens of the UNet's cross-attention width."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cafe_model.reference_encoder import ReferenceEncoder, reference_to_rgb


def test_reference_tokens_shape(tiny_model, reference_photo, other_photo) -> None:
    encoder = tiny_model.reference_encoder
    pixels = encoder.preprocess([reference_photo, other_photo])
    assert pixels.shape == (2, 3, *encoder.input_size_px) == (2, 3, 32, 32)
    features = tiny_model.encode_reference(pixels)
    assert features.shape == (2, encoder.feature_dim)  # CLIP image embeddings
    tokens = tiny_model.reference_tokens(features)
    assert tokens.shape == (2, tiny_model.num_reference_tokens, tiny_model.cross_attention_dim) == (2, 4, 32)
    assert not torch.allclose(tokens[0], tokens[1])  # different photos, different tokens


def test_resampler_reads_dinov2_tokens(trained_tiny_dinov2_model, reference_photo) -> None:
    model = trained_tiny_dinov2_model
    encoder = model.reference_encoder
    assert encoder.architecture == "dinov2" and encoder.is_token_feature
    features = model.encode_reference(encoder.preprocess([reference_photo]))
    num_patches = (encoder.input_size_px[0] // encoder.vision_model.config.patch_size) ** 2
    assert features.shape == (1, 1 + num_patches, encoder.feature_dim)  # CLS + patches, penultimate layer
    assert model.reference_tokens(features).shape == (1, 4, model.cross_attention_dim)
    assert encoder.null_features(3).shape == (3, *features.shape[1:])


def test_encoder_is_frozen_and_stays_in_eval(tiny_model) -> None:
    encoder = tiny_model.reference_encoder
    assert not any(parameter.requires_grad for parameter in encoder.parameters())
    tiny_model.train()
    try:
        assert not encoder.training and not encoder.vision_model.training
        assert tiny_model.unet.training
    finally:
        tiny_model.train(False)


def test_null_reference_is_zero_embeddings(tiny_model) -> None:
    null = tiny_model.reference_encoder.null_features(2)
    assert null.shape == (2, tiny_model.reference_encoder.feature_dim) and not null.any()


def test_feature_kind_must_fit_the_architecture(tiny_model) -> None:
    encoder = tiny_model.reference_encoder
    with pytest.raises(ValueError, match=r"gives features .* not feature='pooled'"):
        ReferenceEncoder(encoder.vision_model, encoder.image_processor, architecture="clip", feature="pooled")


def test_cut_out_is_laid_on_white() -> None:
    cut_out = Image.new("RGBA", (4, 4), (10, 200, 30, 0))  # fully transparent: the old background
    cut_out.putpixel((0, 0), (10, 200, 30, 255))
    rgb = reference_to_rgb(cut_out)
    assert rgb.mode == "RGB" and rgb.getpixel((3, 3)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (10, 200, 30)

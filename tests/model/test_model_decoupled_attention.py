"""Decoupled cross-attention: separate reference k/v, copied from the text ones; scale 0 is the text-only UNet."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

from cafe_model.decoupled_attention import add_decoupled_cross_attention, cross_attention_processor_names
from cafe_model.load import load_model
from cafe_model.presets import get_preset


def _inputs(model, batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    size = model.unet.config.sample_size
    latents = torch.randn(batch_size, 4, size, size, generator=generator)
    timesteps = torch.tensor([10, 700][:batch_size])
    text = model.encode_text(model.tokenize(["a photo of a dog", "a mug on a table"][:batch_size]))
    features = torch.randn(batch_size, model.reference_encoder.feature_dim, generator=generator)
    return latents, timesteps, text, features


def test_new_key_values_start_as_copies_of_the_text_ones(tiny_model) -> None:
    pairs = tiny_model.reference_key_value_pairs()
    assert [name for name, _, _ in pairs] == cross_attention_processor_names(tiny_model.unet)
    assert len(pairs) == 4  # down block, mid block, two up-block layers of the tiny UNet
    for name, to_k_ip, to_v_ip in pairs:
        attention = tiny_model.unet.get_submodule(name.removesuffix(".processor"))
        assert isinstance(attention.processor, IPAdapterAttnProcessor2_0)
        assert torch.equal(to_k_ip.weight, attention.to_k.weight) and torch.equal(to_v_ip.weight, attention.to_v.weight)
        assert to_k_ip.weight.data_ptr() != attention.to_k.weight.data_ptr()  # copies, not shared


def test_reference_scale_zero_is_exactly_the_text_only_unet(tiny_model, model_cache) -> None:
    base = get_preset("tiny").base_source(cache_dir=model_cache)
    text_only_unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval()
    latents, timesteps, text, features = _inputs(tiny_model)
    with torch.no_grad():
        text_only = text_only_unet(latents, timesteps, encoder_hidden_states=text).sample
        at_zero = tiny_model(latents, timesteps, text, features, reference_scale=0.0)
        at_one = tiny_model(latents, timesteps, text, features, reference_scale=1.0)
        at_half = tiny_model(latents, timesteps, text, features, reference_scale=0.5)
    assert torch.equal(at_zero, text_only)
    assert (at_one - text_only).abs().max() > 1e-3  # the reference does steer the UNet
    assert not torch.allclose(at_half, at_one)  # and the scale is per call


def test_only_projector_and_reference_key_values_train(tiny_model) -> None:
    trainable = tiny_model.named_trainable_parameters()
    requiring_grad = {name for name, parameter in tiny_model.named_parameters() if parameter.requires_grad}
    assert requiring_grad == set(trainable)
    projector = {name for name in trainable if name.startswith("unet.encoder_hid_proj.")}
    key_values = {name for name in trainable if ".processor.to_k_ip." in name or ".processor.to_v_ip." in name}
    assert projector and key_values and projector | key_values == set(trainable)
    assert len(key_values) == 2 * len(tiny_model.reference_key_value_pairs())
    frozen_count = sum(parameter.numel() for parameter in tiny_model.parameters() if not parameter.requires_grad)
    assert frozen_count > 10 * sum(parameter.numel() for parameter in tiny_model.trainable_parameters())


def test_gradients_reach_only_the_trainable_parameters(model_cache) -> None:
    model = load_model("tiny", cache_dir=model_cache).train()
    latents, timesteps, text, features = _inputs(model)
    loss = model(latents, timesteps, text, features).pow(2).mean()
    loss.backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_trainable_state_round_trip_and_mismatch(tiny_model, trained_tiny_model, model_cache) -> None:
    fresh = load_model("tiny", cache_dir=model_cache)
    # Two loads start from the same projector and k/v: the init is seeded.
    initial = tiny_model.trainable_state_dict()
    for name, tensor in fresh.trainable_state_dict().items():
        assert torch.equal(tensor, initial[name]), name
    state = trained_tiny_model.trainable_state_dict()
    fresh.load_trainable_state_dict(state)
    for name, tensor in fresh.trainable_state_dict().items():
        assert torch.equal(tensor, state[name])
    with pytest.raises(ValueError, match="missing"):
        fresh.load_trainable_state_dict({name: state[name] for name in list(state)[1:]})


def test_adding_reference_attention_twice_fails_with_a_fix(tiny_model) -> None:
    with pytest.raises(ValueError, match="load a fresh UNet"):
        add_decoupled_cross_attention(tiny_model.unet, torch.nn.Identity(), num_tokens=4)

"""Min-SNR-gamma timestep weights and their combination with the subject-mask weighting, by hand-computed values."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from cafe_train.loss import diffusion_loss, min_snr_weights, min_snr_weights_from, snr


def test_min_snr_weights_by_prediction_type() -> None:
    alphas_cumprod = torch.tensor([0.5, 0.8, 0.2, 0.9])  # SNR = 1, 4, 0.25, 9
    timesteps = torch.tensor([0, 1, 2, 3])
    snr_b = snr(alphas_cumprod, timesteps)
    torch.testing.assert_close(snr_b, torch.tensor([1.0, 4.0, 0.25, 9.0]))
    # epsilon: min(SNR, 2) / SNR
    torch.testing.assert_close(min_snr_weights_from(snr_b, 2.0, "epsilon"), torch.tensor([1.0, 0.5, 1.0, 2 / 9]))
    # v-prediction: min(SNR, 2) / (SNR + 1)
    torch.testing.assert_close(min_snr_weights_from(snr_b, 2.0, "v_prediction"), torch.tensor([0.5, 0.4, 0.2, 0.2]))
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        min_snr_weights_from(snr_b, 2.0, "sample")


def test_min_snr_weights_at_zero_terminal_snr_are_the_limits() -> None:
    snr_b = snr(torch.tensor([0.5, 0.0]), torch.tensor([0, 1]))  # the last step is pure noise
    torch.testing.assert_close(min_snr_weights_from(snr_b, 5.0, "epsilon"), torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(min_snr_weights_from(snr_b, 5.0, "v_prediction"), torch.tensor([0.5, 0.0]))


def test_min_snr_weights_come_from_the_schedulers_alphas_cumprod() -> None:
    # betas 0.5, 0.2 -> alphas_cumprod 0.5, 0.4 -> SNR 1, 2/3; timesteps in batch order [1, 0, 1].
    timesteps = torch.tensor([1, 0, 1])
    epsilon = DDPMScheduler(num_train_timesteps=2, trained_betas=[0.5, 0.2], prediction_type="epsilon")
    torch.testing.assert_close(min_snr_weights(epsilon, timesteps, 0.5), torch.tensor([0.75, 0.5, 0.75]))
    v = DDPMScheduler(num_train_timesteps=2, trained_betas=[0.5, 0.2], prediction_type="v_prediction")
    torch.testing.assert_close(min_snr_weights(v, timesteps, 0.5), torch.tensor([0.3, 0.25, 0.3]))


def test_sample_weights_combine_with_the_mask_weighting() -> None:
    prediction = torch.zeros(2, 1, 1, 2)
    target = torch.tensor([[[[2.0, 1.0]]], [[[1.0, 3.0]]]])  # squared errors: [4, 1] and [1, 9]
    mask = torch.tensor([[[[1.0, 0.0]]], [[[0.0, 0.0]]]])  # the subject: sample 0's first cell
    weights_b = torch.tensor([0.5, 2.0])
    # Mask weights [3, 1] and [1, 1] (sum 6); each sample's terms times its weight; over the mask weights' sum.
    combined = diffusion_loss(prediction, target, mask, 3.0, weights_b)
    assert combined.item() == pytest.approx((0.5 * (3 * 4 + 1 * 1) + 2.0 * (1 + 9)) / 6)
    # No mask: the mean over samples of weight x per-sample MSE.
    assert diffusion_loss(prediction, target, None, 1.0, weights_b).item() == pytest.approx(
        (0.5 * (4 + 1) / 2 + 2.0 * (1 + 9) / 2) / 2
    )
    # Unit weights change nothing.
    ones = torch.ones(2)
    assert diffusion_loss(prediction, target, mask, 3.0, ones) == diffusion_loss(prediction, target, mask, 3.0)
    assert diffusion_loss(prediction, target, None, 1.0, ones) == diffusion_loss(prediction, target, None, 1.0)


def test_sample_weights_scale_the_loss_rather_than_being_normalized_away() -> None:
    # Batch size 1: a weight that entered the divisor too would cancel out completely.
    prediction, target = torch.zeros(1, 1, 1, 2), torch.tensor([[[[2.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]]])
    plain = diffusion_loss(prediction, target, mask, 3.0)
    assert plain.item() == pytest.approx((3 * 4 + 1) / 4)
    assert diffusion_loss(prediction, target, mask, 3.0, torch.tensor([0.25])).item() == pytest.approx(
        0.25 * plain.item()
    )
    with pytest.raises(ValueError, match=r"sample_weights: shape \(2,\), expected \(1,\)"):
        diffusion_loss(prediction, target, mask, 3.0, torch.ones(2))

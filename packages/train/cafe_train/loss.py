"""The diffusion training loss: its target, the subject-mask weighting and min-SNR-gamma timestep weights.

target = diffusion_target(noise_scheduler, latents, noise, timesteps)
weights_b = min_snr_weights(noise_scheduler, timesteps, gamma=5.0)          # or None
loss = diffusion_loss(prediction, target, mask, mask_weight=2.0, sample_weights=weights_b)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

PREDICTION_TYPES = ("epsilon", "v_prediction")


def diffusion_target(
    noise_scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet learns to predict: the noise (epsilon bases, SD 1.5) or the velocity (v-prediction, SD 2.1)."""
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type={prediction_type!r} is not supported for training; use epsilon or v_prediction")


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) per timestep, (B,) float32 on the timesteps' device."""
    alpha_bar = alphas_cumprod.to(torch.float32)[timesteps.to(alphas_cumprod.device).long()]
    return (alpha_bar / (1.0 - alpha_bar)).to(timesteps.device)


def min_snr_weights_from(snr_b: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy").

    The paper weighs the x0-space loss by min(SNR, gamma). An epsilon-prediction MSE already equals the
    x0 MSE times SNR, so its weight is min(SNR, gamma) / SNR; a v-prediction MSE equals it times SNR + 1,
    so min(SNR, gamma) / (SNR + 1) (as diffusers' training scripts compute it).
    """
    if prediction_type == "epsilon":
        # = min(SNR, gamma) / SNR, written so that SNR = 0 (a zero-terminal-SNR schedule) gives its limit 1, not 0/0.
        return torch.clamp(gamma / snr_b, max=1.0)
    if prediction_type == "v_prediction":
        return torch.clamp(snr_b, max=gamma) / (snr_b + 1.0)
    raise ValueError(f"prediction_type={prediction_type!r}: min-SNR weights exist for {', '.join(PREDICTION_TYPES)}")


def min_snr_weights(noise_scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights (B,) for `timesteps`, from the scheduler's alphas_cumprod and prediction type."""
    return min_snr_weights_from(
        snr(noise_scheduler.alphas_cumprod, timesteps), gamma, noise_scheduler.config.prediction_type
    )


def diffusion_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    mask_weight: float,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted MSE over a batch (B, C, H, W).

    Each element's squared error is weighed by its mask weight (`mask_weight` on the subject's latent
    cells of `mask` (B, 1, H, W), 1 elsewhere) times its sample's weight (`sample_weights` (B,), e.g.
    min-SNR), and the sum is divided by the sum of the mask weights alone. The sample weights are
    left out of the divisor on purpose: they set how much each timestep counts, and normalizing them
    away would undo that (at batch size 1, entirely). With no mask and no sample weights this is the
    plain mean; with sample weights only, the mean over samples of weight times per-sample MSE.
    """
    error = F.mse_loss(prediction.float(), target.float(), reduction="none")
    if sample_weights is not None:
        if sample_weights.shape != error.shape[:1]:
            raise ValueError(f"sample_weights: shape {tuple(sample_weights.shape)}, expected ({error.shape[0]},)")
        error = error * sample_weights.to(error.dtype).view((-1,) + (1,) * (error.ndim - 1))
    if mask is None or mask_weight == 1.0:
        return error.mean()
    weights = (1.0 + (mask_weight - 1.0) * mask.to(error.dtype)).expand_as(error)
    return (error * weights).sum() / weights.sum()

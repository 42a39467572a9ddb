"""An exponential moving average (EMA) of the trainable parameters, for sampling with smoother weights.

    ema = ParameterEMA(model.named_trainable_parameters(), decay=0.999)
    ...; optimizer.step(); ema.update(model.named_trainable_parameters())
    save_file(ema.state_dict(), "ema.safetensors")          # what the checkpoint keeps
    model.load_trainable_state_dict(ema.state_dict())       # the weights to sample with

After each update, `shadow = decay * shadow + (1 - decay) * parameter`, starting from the parameters
it is built with. The decay is constant (no warm-up ramp as in diffusers' `EMAModel`): a run's EMA is
then a plain function of its parameter trajectory, and a resume only needs the shadow tensors.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


class ParameterEMA:
    """Shadow copies (fp32, on the parameters' device) of named tensors, averaged by `update`."""

    def __init__(self, parameters: Mapping[str, torch.Tensor], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay={decay!r}: must be in (0, 1)")
        self.decay = decay
        # fp32 whatever the parameters' dtype: at decay 0.999 a bf16 shadow would round most updates away.
        self.shadow = {name: p.detach().to(torch.float32).clone() for name, p in parameters.items()}

    @torch.no_grad()
    def update(self, parameters: Mapping[str, torch.Tensor]) -> None:
        """One step: move every shadow tensor `1 - decay` of the way to its parameter."""
        if parameters.keys() != self.shadow.keys():
            raise ValueError("EMA update: the parameter names differ from those the EMA was built with")
        for name, shadow in self.shadow.items():
            shadow.lerp_(parameters[name].detach().to(torch.float32), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow tensors by parameter name (shared with the EMA, not copied)."""
        return dict(self.shadow)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy `state` (from `state_dict`, e.g. a checkpoint's ema.safetensors) into the shadow tensors."""
        missing, unexpected = sorted(self.shadow.keys() - state.keys()), sorted(state.keys() - self.shadow.keys())
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not fit these parameters: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for name, shadow in self.shadow.items():
            if state[name].shape != shadow.shape:
                raise ValueError(f"EMA {name}: saved shape {tuple(state[name].shape)} != {tuple(shadow.shape)}")
            shadow.copy_(state[name])

"""Classifier-free guidance over two conditions: the text and the reference.

With eps(text, ref) the UNet's prediction, "uncond" the negative prompt with the null reference and
"ref only" the negative prompt with the reference, the guided prediction is

    eps = eps(∅, ∅) + s_ref * (eps(∅, r) - eps(∅, ∅)) + s_text * (eps(t, r) - eps(∅, r))

This is InstructPix2Pix's two-condition guidance (Brooks et al., 2023) with the reference as the image
condition. It follows from log p(x | t, r) = log p(x) + log p(r | x) + log p(t | x, r): `s_ref`
scales how strongly the sample is pulled toward the reference, `s_text` how strongly toward the
prompt given the reference, and each can be tuned alone (more prompt-following vs more identity).

When s_text == s_ref == s the middle term cancels: eps = eps(∅, ∅) + s * (eps(t, r) - eps(∅, ∅)),
plain CFG with both conditions dropped together, which is what stock diffusers computes for an
IP-Adapter. Then only two branches are run (and the sampler matches stock diffusers), and with
s == 1 only one.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

Branch = Literal["uncond", "ref_only", "text_and_ref"]


def guidance_branches(text_guidance: float, reference_guidance: float) -> tuple[Branch, ...]:
    """The UNet branches the guided prediction needs, in batch order (raises ValueError on a bad scale)."""
    for name, value in (("text_guidance", text_guidance), ("reference_guidance", reference_guidance)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value}; it must be a finite number >= 0 (1 = no guidance, 7.5 is usual for SD)")
    if text_guidance == reference_guidance == 1.0:
        return ("text_and_ref",)
    if text_guidance == reference_guidance:
        # Stock diffusers' order: [uncond, cond] in one batch.
        return ("uncond", "text_and_ref")
    return ("uncond", "ref_only", "text_and_ref")


def combine_guidance(
    predictions: dict[Branch, torch.Tensor], *, text_guidance: float, reference_guidance: float
) -> torch.Tensor:
    """The guided prediction from the branches `guidance_branches` asked for (see the module docstring)."""
    if set(predictions) != set(guidance_branches(text_guidance, reference_guidance)):
        raise ValueError(f"branches {sorted(predictions)} do not match the guidance scales")
    text_and_ref = predictions["text_and_ref"]
    if len(predictions) == 1:
        return text_and_ref
    uncond = predictions["uncond"]
    if len(predictions) == 2:
        return uncond + text_guidance * (text_and_ref - uncond)
    ref_only = predictions["ref_only"]
    return uncond + reference_guidance * (ref_only - uncond) + text_guidance * (text_and_ref - ref_only)

"""Two-condition classifier-free guidance: the formula, its stock special case, and the branches it needs."""

from __future__ import annotations

import pytest
import torch

from cafe_model.guidance import combine_guidance, guidance_branches


def _predictions(branches):
    generator = torch.Generator().manual_seed(0)
    return {branch: torch.randn(2, 4, 3, 3, generator=generator) for branch in branches}


def test_branches_by_scales() -> None:
    assert guidance_branches(1.0, 1.0) == ("text_and_ref",)
    assert guidance_branches(7.5, 7.5) == ("uncond", "text_and_ref")  # stock diffusers' batch order
    assert guidance_branches(7.5, 3.0) == ("uncond", "ref_only", "text_and_ref")


def test_equal_scales_are_plain_cfg_and_the_three_branch_formula_agrees() -> None:
    predictions = _predictions(("uncond", "ref_only", "text_and_ref"))
    uncond, ref_only, both = predictions["uncond"], predictions["ref_only"], predictions["text_and_ref"]
    two = combine_guidance({"uncond": uncond, "text_and_ref": both}, text_guidance=5.0, reference_guidance=5.0)
    assert torch.equal(two, uncond + 5.0 * (both - uncond))
    # The general formula with equal scales reduces to the same (the ref-only term cancels).
    general = uncond + 5.0 * (ref_only - uncond) + 5.0 * (both - ref_only)
    assert torch.allclose(general, two, atol=1e-5)
    three = combine_guidance(predictions, text_guidance=6.0, reference_guidance=2.0)
    assert torch.allclose(three, uncond + 2.0 * (ref_only - uncond) + 6.0 * (both - ref_only))
    one = combine_guidance({"text_and_ref": both}, text_guidance=1.0, reference_guidance=1.0)
    assert torch.equal(one, both)


def test_bad_scales_and_branches_fail() -> None:
    with pytest.raises(ValueError, match=r"text_guidance=-1\.0"):
        guidance_branches(-1.0, 2.0)
    with pytest.raises(ValueError, match="reference_guidance=nan"):
        guidance_branches(2.0, float("nan"))
    with pytest.raises(ValueError, match="do not match"):
        combine_guidance(_predictions(("text_and_ref",)), text_guidance=3.0, reference_guidance=2.0)

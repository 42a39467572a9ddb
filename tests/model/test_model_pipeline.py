"""CustomizationPipeline: images of the asked size and number, deterministic per seed, any scheduler, clear errors."""

from __future__ import annotations

import pytest
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler
from model_helpers import pixel_difference

from cafe_model.pipeline import CustomizationPipeline

PROMPT = "a photo of a cat on a beach"


@pytest.fixture(scope="module")
def pipeline(trained_tiny_model) -> CustomizationPipeline:
    return CustomizationPipeline(trained_tiny_model)


def test_images_have_the_asked_size_and_batch(pipeline, reference_photo) -> None:
    assert isinstance(pipeline.scheduler, DDIMScheduler)
    images = pipeline(reference_photo, PROMPT, num_steps=3, seed=0, height_px=48, width_px=72, batch_size=3)
    assert len(images) == 3
    assert all(image.size == (72, 48) and image.mode == "RGB" for image in images)
    default = pipeline(reference_photo, PROMPT, num_steps=2, seed=0)
    assert [image.size for image in default] == [(64, 64)]  # the preset's resolution


def test_deterministic_per_seed(pipeline, reference_photo, other_photo) -> None:
    settings = {"num_steps": 3, "batch_size": 2, "negative_prompt": "blurry", "text_guidance": 6.0}
    first = pipeline(reference_photo, PROMPT, seed=7, **settings)
    again = pipeline(reference_photo, PROMPT, seed=7, **settings)
    other_seed = pipeline(reference_photo, PROMPT, seed=8, **settings)
    other_reference = pipeline(other_photo, PROMPT, seed=7, **settings)
    assert all(pixel_difference(a, b) == 0 for a, b in zip(first, again, strict=True))
    assert pixel_difference(first[0], first[1]) > 0  # one generator, different noise per image
    assert pixel_difference(first[0], other_seed[0]) > 0
    assert pixel_difference(first[0], other_reference[0]) > 0  # the reference steers the images


def test_reference_guidance_and_scale_change_the_images(pipeline, reference_photo) -> None:
    stock_like = pipeline(reference_photo, PROMPT, num_steps=3, seed=1, text_guidance=5.0, reference_guidance=5.0)
    separate = pipeline(reference_photo, PROMPT, num_steps=3, seed=1, text_guidance=5.0, reference_guidance=2.0)
    text_only = pipeline(reference_photo, PROMPT, num_steps=3, seed=1, text_guidance=5.0, reference_scale=0.0)
    assert pixel_difference(stock_like[0], separate[0]) > 0
    assert pixel_difference(stock_like[0], text_only[0]) > 0


def test_no_reference_draws_from_the_null_reference(pipeline, reference_photo) -> None:
    settings = {"num_steps": 3, "seed": 2, "text_guidance": 4.0}
    first = pipeline(None, PROMPT, **settings)
    assert pixel_difference(first[0], pipeline(None, PROMPT, **settings)[0]) == 0
    assert pixel_difference(first[0], pipeline(reference_photo, PROMPT, **settings)[0]) > 0
    assert pixel_difference(first[0], pipeline(None, "a photo of a dog in the snow", **settings)[0]) > 0
    with pytest.raises(TypeError, match="a PIL image or None"):
        pipeline("cat.jpg", PROMPT, **settings)


def test_any_diffusers_scheduler(trained_tiny_model, reference_photo) -> None:
    pipeline = CustomizationPipeline(trained_tiny_model)
    pipeline.scheduler = EulerAncestralDiscreteScheduler.from_config(pipeline.scheduler.config)
    first = pipeline(reference_photo, PROMPT, num_steps=3, seed=3)
    again = pipeline(reference_photo, PROMPT, num_steps=3, seed=3)  # its step noise comes from the seeded generator
    assert first[0].size == (64, 64) and pixel_difference(first[0], again[0]) == 0
    with pytest.raises(TypeError, match="not a diffusers scheduler"):
        pipeline.scheduler = object()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"height_px": 60}, "height_px=60 is not a positive multiple of 8; use 56 or 64"),
        ({"width_px": 4}, "width_px=4 is not a positive multiple of 8; use 8 or 16"),
        ({"batch_size": 0}, "batch_size=0; it must be an int >= 1"),
        ({"num_steps": 0}, "num_steps=0; it must be an int >= 1"),
        ({"text_guidance": -2.0}, "text_guidance=-2.0"),
    ],
)
def test_bad_settings_fail_with_the_allowed_values(pipeline, reference_photo, settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        pipeline(reference_photo, PROMPT, **{"num_steps": 2, **settings})

"""Segmenter with a tiny random SAM: one mask per box in image size, best predicted IoU, batching, cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import sam_model_registry
from segment_anything.utils.transforms import ResizeLongestSide

from cafe_vision.load import load_segmenter
from cafe_vision.mask_cleanup import clean_mask
from cafe_vision.presets import get_preset
from cafe_vision.random_sam import random_sam_checkpoint
from cafe_vision.sam_decode import decode_boxes
from cafe_vision.sam_model import SAM_VIT_B, SAM_VIT_H, SamArch, build_sam, load_sam
from cafe_vision.segmenter import MaskResult, Segmenter

BOXES = [
    [(10.0, 20.0, 120.0, 150.0), (0.0, 0.0, 60.0, 40.0)],
    [(50.0, 30.0, 250.0, 190.0)],
    [],
    [(5.0, 5.0, 80.0, 200.0)],
]


def test_one_mask_per_box_in_image_size(segmenter, photos):
    results = segmenter(photos, BOXES)
    assert [len(masks) for masks in results] == [2, 1, 0, 1]
    for photo, masks in zip(photos, results, strict=True):
        for result in masks:
            assert isinstance(result, MaskResult)
            assert result.mask.dtype == np.bool_
            assert result.mask.shape == (photo.height, photo.width)
            assert isinstance(result.predicted_iou, float) and 0.0 <= result.predicted_iou <= 1.0


def test_keeps_the_candidate_with_the_best_predicted_iou(segmenter, photos):
    """SAM's three candidates computed the SamPredictor way (ResizeLongestSide): the best one is returned."""
    [[result]] = segmenter(photos[1:2], [BOXES[1]])
    model, transform = segmenter.model, ResizeLongestSide(segmenter.image_size_px)
    pixels = np.asarray(photos[1])
    image = torch.as_tensor(transform.apply_image(pixels)).permute(2, 0, 1)
    boxes = transform.apply_boxes_torch(torch.tensor(BOXES[1]), pixels.shape[:2])
    [output] = model([{"image": image, "original_size": pixels.shape[:2], "boxes": boxes}], multimask_output=True)
    best = int(output["iou_predictions"][0].argmax())
    assert np.array_equal(result.mask, output["masks"][0, best].numpy())
    assert result.predicted_iou == pytest.approx(float(output["iou_predictions"][0, best].clamp(0, 1)), abs=1e-6)


def test_batched_equals_one_by_one(segmenter, photos):
    together = segmenter(photos, BOXES)
    for photo, boxes, batch_result in zip(photos, BOXES, together, strict=True):
        [alone] = segmenter([photo], [boxes])
        assert len(alone) == len(batch_result)
        for a, b in zip(alone, batch_result, strict=True):
            assert a.predicted_iou == pytest.approx(b.predicted_iou, abs=1e-4)
            assert (a.mask != b.mask).mean() < 1e-3  # pixels right at the logit threshold may flip


def test_decode_boxes_equals_sam_forward_per_image(segmenter, photos):
    """All boxes of all images in one decoder call give what Sam.forward's per-image loop gives."""
    model, transform = segmenter.model, ResizeLongestSide(segmenter.image_size_px)
    records, owners, boxes = [], [], []
    for photo, photo_boxes in zip(photos, BOXES, strict=True):
        if not photo_boxes:
            continue
        pixels = np.asarray(photo)
        image = torch.as_tensor(transform.apply_image(pixels)).permute(2, 0, 1).contiguous()
        scaled = transform.apply_boxes_torch(torch.tensor(photo_boxes), pixels.shape[:2])
        records.append({"image": image, "original_size": pixels.shape[:2], "boxes": scaled})
        owners += [len(records) - 1] * len(photo_boxes)
        boxes.append(scaled)
    expected = model(records, multimask_output=True)
    with torch.inference_mode():
        embeddings = model.image_encoder(torch.stack([model.preprocess(r["image"]) for r in records]))
    logits, ious = decode_boxes(model, embeddings, torch.tensor(owners), torch.cat(boxes))
    assert logits.shape[:2] == ious.shape == (len(owners), 3)
    torch.testing.assert_close(logits, torch.cat([e["low_res_logits"] for e in expected]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ious, torch.cat([e["iou_predictions"] for e in expected]), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="owners"):
        decode_boxes(model, embeddings, torch.tensor(owners[:-1]), torch.cat(boxes))


def test_no_boxes_costs_nothing(segmenter, photos):
    assert segmenter(photos[:2], [[], []]) == [[], []]
    assert segmenter([], []) == []


def test_odd_images_never_crash(segmenter, odd_images):
    boxes = [[(0.0, 0.0, float(image.width), float(image.height))] for image in odd_images]
    for image, [result] in zip(odd_images, segmenter(odd_images, boxes), strict=True):
        assert result.mask.shape == (image.height, image.width)


@pytest.mark.parametrize(
    ("boxes", "message"),
    [([[(10, 10, 5, 20)]], "x0 < x1"), ([[(1, 2, 3)]], "rows"), ([[(0, 0, float("nan"), 5)]], "NaN")],
)
def test_bad_boxes_fail_loudly(segmenter, photos, boxes, message):
    with pytest.raises(ValueError, match=message):
        segmenter(photos[:1], boxes)
    with pytest.raises(ValueError, match="one list per image"):
        segmenter(photos[:2], boxes)


def test_cleanup_runs_inside_the_segmenter(model_cache, segmenter, photos):
    cleaning = load_segmenter(get_preset("tiny"), cache_dir=model_cache, min_hole_area_px=50, min_island_area_px=50)
    for raw, cleaned in zip(segmenter(photos, BOXES), cleaning(photos, BOXES), strict=True):
        for a, b in zip(raw, cleaned, strict=True):
            expected = clean_mask(a.mask, min_hole_area_px=50, min_island_area_px=50)
            assert np.array_equal(b.mask, expected)


def test_clean_mask_removes_a_small_island_and_fills_a_small_hole():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:25, 5:25] = True  # the object, 400 px
    mask[12:14, 12:14] = False  # a 4 px hole inside it
    mask[32:34, 32:34] = True  # a 4 px island apart
    mask[0:3, 15:18] = False  # a notch in the border-side? no: outside the object, untouched
    cleaned = clean_mask(mask, min_hole_area_px=10, min_island_area_px=10)
    expected = np.zeros((40, 40), dtype=bool)
    expected[5:25, 5:25] = True
    assert np.array_equal(cleaned, expected)
    assert cleaned.dtype == np.bool_ and mask[12, 12] == np.False_  # the input is not modified


def test_clean_mask_keeps_large_parts_and_border_notches():
    mask = np.zeros((30, 30), dtype=bool)
    mask[:, :20] = True
    mask[0:2, 8:10] = False  # a 4 px notch touching the border: not a hole
    mask[10:16, 5:11] = False  # a 36 px hole: larger than the limit
    mask[25:28, 25:28] = True  # a 9 px island: larger than the limit
    assert np.array_equal(clean_mask(mask, min_hole_area_px=20, min_island_area_px=5), mask)
    assert np.array_equal(clean_mask(mask), mask)  # both steps off


def test_clean_mask_never_empties_a_mask():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:4, 2:4] = True  # 4 px
    mask[10:13, 10:13] = True  # 9 px, the largest
    cleaned = clean_mask(mask, min_island_area_px=100)
    assert cleaned.sum() == 9 and cleaned[11, 11]
    assert not clean_mask(np.zeros((5, 5), dtype=bool), min_island_area_px=10).any()
    with pytest.raises(ValueError, match="2-D"):
        clean_mask(np.zeros((2, 5, 5), dtype=bool))


def test_official_architectures_match_segment_anything():
    """SAM_VIT_B / SAM_VIT_H build the same modules as sam_model_registry, so official checkpoints load."""
    for arch, registry_name in ((SAM_VIT_B, "vit_b"), (SAM_VIT_H, "vit_h")):
        with torch.device("meta"):  # shapes only: no memory, no init cost
            ours = build_sam(arch).state_dict()
            theirs = sam_model_registry[registry_name]().state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_checkpoint_of_another_architecture_is_refused(model_cache):
    checkpoint = random_sam_checkpoint(get_preset("tiny").segmenter, cache_dir=model_cache)
    other = SamArch(
        "other",
        128,
        48,
        2,
        2,
        (1,),
        window_size=4,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
    )
    with pytest.raises(RuntimeError, match="does not fit"):
        load_sam(other, checkpoint)
    with pytest.raises(FileNotFoundError):
        Segmenter(model_cache / "missing.pth", other)


def test_sam_arch_validation():
    with pytest.raises(ValueError, match="multiple of"):
        SamArch("bad", 100, 32, 2, 2, (1,))
    with pytest.raises(ValueError, match="global_attn_indexes"):
        SamArch("bad", 128, 32, 2, 2, (2,))

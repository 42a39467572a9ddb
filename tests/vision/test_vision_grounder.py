"""Grounder with a tiny random Grounding DINO: boxes in image pixels, phrases from the prompt, NMS, batching."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from cafe_vision.detection import Detection, suppress_overlaps
from cafe_vision.grounder import Grounder, normalize_prompt
from cafe_vision.images import fit_inside, to_rgb
from cafe_vision.load import load_grounder
from cafe_vision.presets import get_preset

PROMPT = "a dog. a couch."


def _iou_matrix(detections: list[Detection]) -> torch.Tensor:
    boxes = torch.tensor([d.box_xyxy for d in detections])
    return box_iou(boxes, boxes)


def test_detections_are_boxes_inside_the_original_image(grounder, photos):
    results = grounder(photos, [PROMPT] * len(photos))
    assert len(results) == len(photos)
    assert all(results), "thresholds this low must give every photo boxes"
    for photo, detections in zip(photos, results, strict=True):
        for detection in detections:
            assert isinstance(detection, Detection)
            x0, y0, x1, y1 = detection.box_xyxy
            assert all(isinstance(value, float) for value in detection.box_xyxy)
            assert 0 <= x0 < x1 <= photo.width and 0 <= y0 < y1 <= photo.height
            assert 0.05 < detection.score <= 1.0
        scores = [d.score for d in detections]
        assert scores == sorted(scores, reverse=True)


def test_phrases_come_from_the_prompt(model_cache, photos):
    grounder = load_grounder(get_preset("tiny"), cache_dir=model_cache, box_threshold=0.05, text_threshold=0.5)
    prompt_words = set(normalize_prompt(PROMPT).replace(".", " ").split())
    phrases = [d.phrase for detections in grounder(photos, [PROMPT] * len(photos)) for d in detections]
    assert phrases
    for phrase in phrases:
        assert "[" not in phrase  # no [CLS] / [SEP] left in
        assert set(phrase.replace(".", " ").split()) <= prompt_words


def test_one_prompt_per_image(grounder, photos):
    prompts = ["a dog", "a cat. a mug.", "the red rocket", "a person"]  # no final dots: must not be merged
    results = grounder(photos, prompts)
    assert len(results) == len(photos)
    with pytest.raises(ValueError, match="one prompt per image"):
        grounder(photos, prompts[:2])
    with pytest.raises(ValueError, match="names nothing"):
        grounder(photos[:1], [" . "])


def test_batched_equals_one_by_one(model_cache, photos):
    """Images of different sizes in one batch get the boxes they get alone (letterboxed, not batch-padded)."""
    grounder = load_grounder(
        get_preset("tiny"), cache_dir=model_cache, box_threshold=0.0, text_threshold=0.0, nms_iou_threshold=1.0
    )
    prompts = [PROMPT, "a cat.", "a cup of coffee. a table.", "a rocket."]
    batched = grounder(photos, prompts)
    for photo, prompt, together in zip(photos, prompts, batched, strict=True):
        [alone] = grounder([photo], [prompt])
        assert len(alone) == len(together) == get_preset("tiny").grounder.num_queries
        key = lambda d: d.box_xyxy  # noqa: E731 - scores tie at random init; boxes identify detections
        for a, b in zip(sorted(alone, key=key), sorted(together, key=key), strict=True):
            assert a.box_xyxy == pytest.approx(b.box_xyxy, abs=1e-2)
            assert a.score == pytest.approx(b.score, abs=1e-4)
            assert a.phrase == b.phrase


def _stock_detections(grounder: Grounder, images, prompts: list[str]) -> list[list[Detection]]:
    """What the Grounder must give: transformers' own processor and post-processor, then clipping and NMS."""
    side = grounder.image_size_px
    rgb = [to_rgb(image) for image in images]
    texts = [normalize_prompt(prompt) for prompt in prompts]
    inputs = grounder.processor(
        images=[fit_inside(image, side) for image in rgb],
        text=texts,
        do_resize=False,
        pad_size={"height": side, "width": side},
        padding=True,
        truncation=True,
        max_length=grounder.model.config.max_text_len,
        return_tensors="pt",
    )
    with torch.inference_mode():
        outputs = grounder.model(**inputs)
    processed = grounder.processor.post_process_grounded_object_detection(
        outputs,
        input_ids=inputs["input_ids"],
        threshold=grounder.box_threshold,
        text_threshold=grounder.text_threshold,
        target_sizes=[(image.height, image.width) for image in rgb],
    )
    results = []
    for image, result in zip(rgb, processed, strict=True):
        detections = []
        labels = result["text_labels"] if len(result["boxes"]) else []  # [""] when no box passed
        for box, score, label in zip(result["boxes"].tolist(), result["scores"].tolist(), labels, strict=True):
            x0, x1 = (min(max(x, 0.0), image.width) for x in (box[0], box[2]))
            y0, y1 = (min(max(y, 0.0), image.height) for y in (box[1], box[3]))
            if x1 > x0 and y1 > y0:
                detections.append(Detection((x0, y0, x1, y1), score, grounder._clean_phrase(label)))
        results.append(suppress_overlaps(detections, grounder.nms_iou_threshold)[: grounder.max_detections])
    return results


@pytest.mark.parametrize(
    "settings",
    [{}, {"box_threshold": 0.2, "text_threshold": 0.1}, {"max_detections": 2, "nms_iou_threshold": 0.3}],
    ids=["preset", "low-thresholds", "max-2"],
)
def test_equals_the_stock_processor_path(model_cache, photos, odd_images, settings):
    """The Grounder's own input tensors and post-processing give exactly what transformers' processor gives."""
    images = [*photos, *odd_images]
    # One batch: the text padding, and so the numbers, follow the longest prompt of a batch.
    grounder = load_grounder(get_preset("tiny"), cache_dir=model_cache, batch_size=len(images), **settings)
    prompts = ["a dog. a cat.", "a red ball", "shoe", "a dog", "teapot. cup. spoon.", "a b c d e.", "x", "y", "z", "w"]
    ours = grounder(images, prompts)
    assert sum(map(len, ours)) > len(images)  # boxes to compare, not empty lists
    assert ours == _stock_detections(grounder, images, prompts)


def test_nms_removes_overlapping_boxes(model_cache, photos):
    def grounder(iou: float) -> Grounder:
        return load_grounder(
            get_preset("tiny"), cache_dir=model_cache, box_threshold=0.0, text_threshold=0.0, nms_iou_threshold=iou
        )

    everything = grounder(1.0)(photos, [PROMPT] * len(photos))
    suppressed = grounder(0.3)(photos, [PROMPT] * len(photos))
    assert sum(map(len, suppressed)) < sum(map(len, everything))
    for detections in suppressed:
        ious = _iou_matrix(detections)
        off_diagonal = ious[~torch.eye(len(detections), dtype=torch.bool)]
        assert (off_diagonal <= 0.3 + 1e-6).all()


def test_suppress_overlaps_keeps_the_best_of_each_group():
    best = Detection((0.0, 0.0, 10.0, 10.0), 0.9, "a dog")
    overlapping = Detection((1.0, 1.0, 10.0, 10.0), 0.8, "a puppy")  # IoU 0.81 with best, other phrase
    apart = Detection((20.0, 20.0, 30.0, 30.0), 0.5, "a couch")
    assert suppress_overlaps([overlapping, apart, best], 0.5) == [best, apart]
    assert suppress_overlaps([overlapping, apart, best], 0.9) == [best, overlapping, apart]
    assert suppress_overlaps([], 0.5) == []
    with pytest.raises(ValueError, match="iou_threshold"):
        suppress_overlaps([best], 1.5)


def test_max_detections_and_thresholds(model_cache, photos):
    capped = load_grounder(get_preset("tiny"), cache_dir=model_cache, box_threshold=0.0, max_detections=3)
    assert all(len(detections) == 3 for detections in capped(photos, [PROMPT] * len(photos)))
    strict = load_grounder(get_preset("tiny"), cache_dir=model_cache, box_threshold=1.0)
    assert strict(photos, [PROMPT] * len(photos)) == [[], [], [], []]


def test_odd_images_never_crash(grounder, odd_images):
    results = grounder(odd_images, [PROMPT] * len(odd_images))
    for image, detections in zip(odd_images, results, strict=True):
        for detection in detections:
            x0, y0, x1, y1 = detection.box_xyxy
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height


def test_normalize_prompt():
    assert normalize_prompt("  A Dog.  A   Couch ") == "a dog. a couch."
    assert normalize_prompt("a dog.") == "a dog."


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"box_threshold": 1.5}, "box_threshold"),
        ({"image_size_px": 8}, "image_size_px"),
        ({"max_detections": 0}, "max_detections"),
    ],
)
def test_bad_arguments_fail_before_loading(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        Grounder(tmp_path / "never-read", **arguments)

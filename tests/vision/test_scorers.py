"""Scorers on tiny real models: DINO, CLIP-I, CLIP-T (against torchmetrics), copy-paste, instance counts."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torchmetrics.multimodal.clip_score import CLIPScore
from torchvision.ops import box_iou
from transformers import CLIPModel, CLIPProcessor

from cafe_vision.compose import box_from_mask, compose_reference
from cafe_vision.copy_paste import copy_paste_score, reference_pixels
from cafe_vision.scorer_presets import SCORER_PRESETS, get_scorer_preset
from cafe_vision.scorers import SCORE_NAMES, Scorers
from cafe_vision.subject_finder import FoundSubject


@pytest.fixture(scope="module")
def scorers(model_cache: Path) -> Scorers:
    return Scorers("tiny", cache_dir=model_cache)


def photo(name: str, size: tuple[int, int] = (96, 96)) -> Image.Image:
    return Image.fromarray(getattr(data, name)()).convert("RGB").resize(size)


def opaque(image: Image.Image) -> Image.Image:
    """A reference cut-out whose subject is the whole image (alpha all 255)."""
    return image.convert("RGBA")


def ellipse_mask(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    ys, xs = np.mgrid[:height, :width]
    x0, y0, x1, y1 = box
    return ((xs - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 + ((ys - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 <= 1


@pytest.fixture(scope="module")
def subject_reference() -> Image.Image:
    """The astronaut's head and shoulders cut out as the data engine does (RGBA, alpha = an elliptic mask)."""
    astronaut = photo("astronaut", (128, 128))
    mask = ellipse_mask(128, 128, (30, 10, 100, 90))
    return compose_reference(astronaut, mask, box_from_mask(mask))


def paste(cutout: Image.Image, at_xy: tuple[int, int], background: Image.Image) -> tuple[Image.Image, FoundSubject]:
    """`cutout` pasted onto `background` at `at_xy`, and the pasted subject as found (its alpha's box and mask)."""
    image = background.copy()
    image.paste(cutout, at_xy, cutout)
    mask = np.zeros((image.height, image.width), dtype=bool)
    alpha = np.asarray(cutout)[..., 3] >= 128
    x, y = at_xy
    mask[y : y + alpha.shape[0], x : x + alpha.shape[1]] = alpha
    return image, FoundSubject(box_from_mask(mask), mask, 1, 1.0)


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'huge'.*tiny, base"):
        get_scorer_preset("huge")
    with pytest.raises(ValueError, match="tiny"):
        Scorers("huge")
    assert set(SCORER_PRESETS) == {"tiny", "base"}


def test_the_preset_sets_the_grounders_input_square(scorers: Scorers) -> None:
    tiny = get_scorer_preset("tiny")
    assert scorers.finder.grounder.image_size_px == tiny.grounder_image_size_px == 96
    assert tiny.vision.grounder_image_size_px == 128  # the data engine's own stays as it was
    with pytest.raises(ValueError, match="grounder_image_size_px=16 is below 32"):
        dataclasses.replace(tiny, grounder_image_size_px=16)


def test_real_preset_without_weights_names_the_download(monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline mode (what HF_HUB_OFFLINE=1 sets): fail on the first missing file instead of retrying the network.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="hf download facebook/dino-vits16"):
        Scorers("base")


def test_scores_have_every_key_and_the_found_subject(scorers: Scorers, subject_reference: Image.Image) -> None:
    # A grey and an RGBA candidate too: any mode a generator or a file gives is brought to RGB.
    images = [photo("astronaut"), photo("chelsea", (128, 96)).convert("L"), photo("coffee", (80, 120)).convert("RGBA")]
    results = scorers(
        [subject_reference] * 3, images, ["an astronaut", "a cat on a rug", "a cup of coffee"], ["a person"] * 3
    )
    assert len(results) == 3
    for result, image in zip(results, images, strict=True):
        assert tuple(result.scores) == SCORE_NAMES
        assert all(isinstance(value, float) for value in result.scores.values())
        assert 0.0 <= result.scores["copy_paste"] <= 1.0
        assert 0.0 <= result.scores["clip_t"] <= 100.0
        if result.scores["subject_found"]:
            x0, y0, x1, y1 = result.box_xyxy
            assert all(isinstance(v, int) for v in result.box_xyxy)
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
            assert result.mask.shape == (image.height, image.width) and result.mask.dtype == bool
        else:
            assert result.box_xyxy is None and result.mask is None and result.scores["dino"] == 0.0
    assert set(scorers.models) == {"dino", "clip", "grounder", "segmenter"}
    assert scorers.models["clip"] == {"name": "cafe-random/clip-tiny-random", "revision": "seed0"}


def test_an_image_scores_one_against_itself_and_lower_against_another(scorers: Scorers) -> None:
    astronaut, chelsea = photo("astronaut"), photo("chelsea")
    references = [opaque(astronaut), opaque(astronaut)]
    images = [astronaut, chelsea]
    # The subject is the whole image: constructed, since random grounding finds random boxes.
    found = [FoundSubject.whole_image(image) for image in images]
    same, other = scorers.score_found(references, images, ["an astronaut", "an astronaut"], found)
    assert same.scores["dino"] == pytest.approx(1.0, abs=1e-5)
    assert same.scores["clip_i"] == pytest.approx(1.0, abs=1e-5)
    assert same.scores["copy_paste"] == pytest.approx(1.0, abs=1e-6)
    assert other.scores["dino"] < 0.95
    assert other.scores["clip_i"] < 0.95
    assert other.scores["copy_paste"] < 0.3
    # The standalone scores agree with the composed ones.
    np.testing.assert_allclose(
        scorers.clip_i(references, images), [same.scores["clip_i"], other.scores["clip_i"]], atol=1e-6
    )


def test_dino_alone_is_zero_where_nothing_is_found(model_cache: Path) -> None:
    blind = Scorers(dataclasses.replace(get_scorer_preset("tiny"), box_threshold=1.0), cache_dir=model_cache)
    image = photo("astronaut")
    np.testing.assert_array_equal(blind.dino([opaque(image)], [image], ["a person"]), [0.0])
    [result] = blind([opaque(image)], [image], ["an astronaut"], ["a person"])
    assert result.box_xyxy is None and result.mask is None
    assert result.scores["subject_found"] == 0.0 and result.scores["num_instances"] == 0.0
    assert result.scores["dino"] == 0.0 and result.scores["copy_paste"] == 0.0
    assert result.scores["clip_i"] == pytest.approx(1.0, abs=1e-5)  # the whole image needs no grounding


def test_num_instances_counts_the_boxes_after_nms(scorers: Scorers) -> None:
    images = [photo(name) for name in ("astronaut", "chelsea", "coffee", "rocket", "horse")]
    subjects = ["a person", "a cat", "a cup", "a rocket", "a horse"]
    results = scorers([opaque(image) for image in images], images, ["a photo"] * 5, subjects, batch_size=2)
    detections = scorers.finder.grounder(images, subjects)
    counts = [result.scores["num_instances"] for result in results]
    assert counts == [float(len(found)) for found in detections]
    assert max(counts) >= 2, "the tiny grounder should give some image several boxes"
    for found, result in zip(detections, results, strict=True):
        assert result.scores["subject_found"] == (1.0 if found else 0.0)
        if len(found) >= 2:
            ious = box_iou(torch.tensor([d.box_xyxy for d in found]), torch.tensor([d.box_xyxy for d in found]))
            assert float((ious - torch.eye(len(found))).max()) <= scorers.preset.nms_iou_threshold + 1e-6
        if found:  # the best box, to whole pixels
            x0, y0, x1, y1 = found[0].box_xyxy
            bx0, by0, bx1, by1 = result.box_xyxy
            assert bx0 <= x0 < bx0 + 1 and by0 <= y0 < by0 + 1 and bx1 - 1 < x1 <= bx1 and by1 - 1 < y1 <= by1


def test_copy_paste_fires_on_a_pasted_reference_and_not_on_a_reposed_one(
    scorers: Scorers, subject_reference: Image.Image
) -> None:
    background = photo("coffee", (160, 160))
    red, green, blue, alpha = subject_reference.split()
    candidates = {
        "pasted": subject_reference,
        "pasted mirrored": subject_reference.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        "rotated 30": subject_reference.rotate(30, expand=True, resample=Image.Resampling.BILINEAR),
        "rotated 90": subject_reference.rotate(90, expand=True),
        "recolored": Image.merge("RGBA", (blue, green, red, alpha)),
        "another subject": compose_reference(
            photo("chelsea", (128, 96)), ellipse_mask(96, 128, (30, 5, 100, 85)), (30, 5, 100, 85)
        ),
    }
    scores = {}
    for name, cutout in candidates.items():
        image, found = paste(cutout, (20, 15), background)
        [result] = scorers.score_found([subject_reference], [image], ["a person"], [found])
        scores[name] = result.scores["copy_paste"]
        assert scores[name] == pytest.approx(copy_paste_score(subject_reference, image, found.box_xyxy, found.mask))
    assert scores["pasted"] > 0.98 and scores["pasted mirrored"] > 0.98
    for name in ("rotated 30", "rotated 90", "recolored", "another subject"):
        assert scores[name] < 0.6, (name, scores)


def test_copy_paste_survives_jpeg_rescaling_and_a_loose_box(subject_reference: Image.Image) -> None:
    background = photo("rocket", (140, 120))
    image, found = paste(subject_reference, (30, 20), background)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75)
    jpeg = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    assert copy_paste_score(subject_reference, jpeg, found.box_xyxy, found.mask) > 0.85
    smaller = subject_reference.resize((subject_reference.width * 3 // 4, subject_reference.height * 3 // 4))
    image, found = paste(smaller, (30, 20), background)
    assert copy_paste_score(subject_reference, image, found.box_xyxy, found.mask) > 0.8
    x0, y0, x1, y1 = found.box_xyxy
    loose = (x0 - 4, y0 - 4, x1 + 4, y1 + 4)
    assert copy_paste_score(subject_reference, image, loose, None) > 0.6
    assert copy_paste_score(subject_reference, image, None, None) == 0.0


def test_copy_paste_of_an_empty_or_flat_reference(subject_reference: Image.Image) -> None:
    """Nothing opaque: nothing to compare, 0.0. A flat grey subject is judged on closeness alone: its
    pasted copy scores about 1, a subject of another grey far less."""
    empty = Image.new("RGBA", (40, 40), (200, 10, 10, 0))
    assert reference_pixels(empty) is None
    assert copy_paste_score(empty, photo("rocket", (96, 96)), (0, 0, 40, 40), None) == 0.0
    flat = Image.new("RGBA", (40, 40), (128, 128, 128, 255))
    prepared = reference_pixels(flat)
    assert prepared is not None and prepared.flat
    background = photo("rocket", (96, 96))
    image, found = paste(flat, (20, 20), background)
    assert copy_paste_score(prepared, image, found.box_xyxy, found.mask) > 0.98
    darker, found = paste(Image.new("RGBA", (40, 40), (90, 90, 90, 255)), (20, 20), background)
    assert copy_paste_score(prepared, darker, found.box_xyxy, found.mask) < 0.5
    # Prepared once or given as the image: the same score.
    assert copy_paste_score(flat, darker, found.box_xyxy, found.mask) == copy_paste_score(
        prepared, darker, found.box_xyxy, found.mask
    )


class _ClipFeatures(CLIPModel):
    """A CLIPModel whose `get_*_features` return tensors, as torchmetrics 1.9 expects: on transformers 5
    they return a `BaseModelOutputWithPooling`, whose `pooler_output` is that tensor."""

    def get_image_features(self, *args, **kwargs):
        return super().get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs):
        return super().get_text_features(*args, **kwargs).pooler_output


def test_clip_t_agrees_with_torchmetrics(scorers: Scorers, model_cache: Path) -> None:
    folder = scorers.preset.clip_source(cache_dir=model_cache)
    # torchmetrics' own loading ("openai" ids): CLIPModel + CLIPProcessor from_pretrained of the same folder.
    metric = CLIPScore(
        model_name_or_path=lambda: (_ClipFeatures.from_pretrained(folder), CLIPProcessor.from_pretrained(folder))
    )
    images = [photo("astronaut", (128, 128)), photo("chelsea", (128, 85)), photo("coffee", (70, 110)), photo("horse")]
    texts = ["an astronaut", "a cat sitting on a red rug in the afternoon light", "coffee", "a horse, in a field", "x"]
    texts += ["a photo of sks dog on the beach", "A RED CUBE!", "two cups of espresso on a wooden table, top view"]
    # Every image with every prompt: a random CLIP's cosines are mostly negative (CLIP-T 0), so
    # enough pairs are needed for some positive ones; prompts of several lengths exercise the padding.
    pairs = [(image, text) for image in images for text in texts]
    images, prompts = [image for image, _ in pairs], [text for _, text in pairs]
    ours = scorers.clip_t(images, prompts, batch_size=3)
    theirs = []
    for image, prompt in zip(images, prompts, strict=True):
        metric.reset()
        metric.update([torch.from_numpy(np.array(image)).permute(2, 0, 1)], [prompt])
        theirs.append(float(metric.compute()))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert (ours > 1.0).sum() >= 2, "some pairs should have a positive cosine, or the check is only of zeros"


def test_embed_images_is_normalized_and_finds_duplicates(scorers: Scorers) -> None:
    astronaut, chelsea = photo("astronaut"), photo("chelsea")
    embeddings = scorers.embed_images([astronaut, chelsea, astronaut.copy()], batch_size=2)
    assert embeddings.shape == (3, scorers.clip.dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert embeddings[0] @ embeddings[2] == pytest.approx(1.0, abs=1e-5)
    assert embeddings[0] @ embeddings[1] < 0.95
    assert scorers.embed_images([]).shape == (0, scorers.clip.dim)


def test_mismatched_lengths_raise(scorers: Scorers) -> None:
    image = photo("astronaut")
    reference = opaque(image)
    with pytest.raises(ValueError, match="2 references, 1 images"):
        scorers([reference, reference], [image], ["a"], ["a"])
    with pytest.raises(ValueError, match="subjects"):
        scorers([reference], [image], ["a"], [])
    with pytest.raises(ValueError, match="prompts"):
        scorers.clip_t([image], ["a", "b"])
    with pytest.raises(ValueError, match="references"):
        scorers.clip_i([], [image])
    with pytest.raises(ValueError, match="subjects"):
        scorers.dino([reference], [image], ["a", "b"])
    with pytest.raises(ValueError, match="batch_size"):
        scorers([reference], [image], ["a"], ["a"], batch_size=0)
    assert scorers([], [], [], []) == []

"""Device and dtype choice: CPU by default, CUDA when asked and present, a loud error when asked and absent."""

from __future__ import annotations

import pytest
import torch

from cafe_vision.devices import resolve_device, resolve_dtype
from cafe_vision.load import load_captioner, load_grounder, load_segmenter
from cafe_vision.presets import get_preset


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_cuda_says_what_to_use():
    with pytest.raises(ValueError, match="CUDA is not available here; use device='cpu'"):
        resolve_device("cuda")


def test_bad_device_and_dtype_names():
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("meta")
    with pytest.raises(ValueError, match="bfloat16"):
        resolve_dtype("half-ish")
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype(torch.float16) is torch.float16


def test_every_model_runs_in_bfloat16(model_cache, photos):
    """SAM runs low precision through autocast (its prompt encoder insists on float32 boxes)."""
    tiny = get_preset("tiny")
    captions = load_captioner(tiny, cache_dir=model_cache, dtype="bfloat16")(photos[:2])
    assert all(captions)
    grounder = load_grounder(tiny, cache_dir=model_cache, dtype="bfloat16", box_threshold=0.05)
    detections = grounder(photos[:2], ["a person.", "a cat."])
    assert all(detections)
    segmenter = load_segmenter(tiny, cache_dir=model_cache, dtype="bfloat16")
    masks = segmenter(photos[:2], [[d.box_xyxy for d in found[:2]] for found in detections])
    for photo, results in zip(photos[:2], masks, strict=True):
        assert all(r.mask.shape == (photo.height, photo.width) for r in results)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_model_runs_on_cuda(model_cache, photos):
    tiny = get_preset("tiny")
    captioner = load_captioner(tiny, cache_dir=model_cache, device="cuda")
    assert next(captioner.model.parameters()).device.type == "cuda"
    assert all(captioner(photos))
    grounder = load_grounder(tiny, cache_dir=model_cache, device="cuda", box_threshold=0.05)
    on_gpu = grounder(photos, ["a dog."] * len(photos))
    assert all(on_gpu)
    segmenter = load_segmenter(tiny, cache_dir=model_cache, device="cuda", dtype="bfloat16")
    results = segmenter(photos, [[d.box_xyxy for d in found[:1]] for found in on_gpu])
    assert all(r.mask.shape == (p.height, p.width) for p, rs in zip(photos, results, strict=True) for r in rs)

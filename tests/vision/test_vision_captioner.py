"""Captioner with a tiny random BLIP (and a tiny GIT): one non-empty caption per image, any image."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

from cafe_vision.bert_tokenizer import write_bert_tokenizer
from cafe_vision.captioner import Captioner
from cafe_vision.load import load_captioner
from cafe_vision.presets import get_preset


def test_one_nonempty_caption_per_image(captioner, photos):
    captions = captioner(photos)
    assert len(captions) == len(photos)
    assert all(isinstance(caption, str) and caption for caption in captions)
    assert all(caption == caption.strip() for caption in captions)
    # Random weights give gibberish, but different photos still give different gibberish.
    assert len(set(captions)) > 1


def test_odd_sizes_and_modes_never_crash(captioner, odd_images):
    captions = captioner(odd_images)
    assert len(captions) == len(odd_images)
    assert all(isinstance(caption, str) and caption for caption in captions)


def test_empty_batch(captioner):
    assert captioner([]) == []


def test_batched_equals_one_by_one(captioner, photos):
    assert captioner(photos) == [captioner([photo])[0] for photo in photos]


def test_small_batch_size_splits_without_changing_results(model_cache, captioner, photos):
    split = load_captioner(get_preset("tiny"), cache_dir=model_cache, batch_size=3)
    assert split(photos) == captioner(photos)


def test_max_new_tokens_bounds_the_caption(model_cache, photos):
    short = load_captioner(get_preset("tiny"), cache_dir=model_cache, max_new_tokens=2)
    # Two word pieces decode to one or two words (re-tokenizing the text is not a round trip).
    assert all(1 <= len(caption.split()) <= 2 for caption in short(photos))


def test_prompt_is_continued_and_stripped(model_cache, photos):
    prompted = load_captioner(get_preset("tiny"), cache_dir=model_cache, prompt="A picture of")
    captions = prompted(photos)
    assert all(caption and not caption.lower().startswith("a picture of") for caption in captions)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"max_new_tokens": 0}, "max_new_tokens"), ({"prompt": "  "}, "prompt"), ({"batch_size": 0}, "batch_size")],
)
def test_bad_arguments_fail_before_loading(arguments, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        Captioner(tmp_path / "never-read", **arguments)


def test_missing_hub_model_says_how_to_fix(monkeypatch):
    # Offline, as on these machines; the env var is read at import, so patch the constant it sets
    # (else the hub client retries the network for minutes before failing).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="hf download cafe-test/no-such-model"):
        Captioner("cafe-test/no-such-model")


def _tiny_git(folder: Path) -> Path:
    """A random GIT (a decoder-only captioner, unlike BLIP's encoder-decoder) saved like a hub model."""
    tokenizer = write_bert_tokenizer(folder / "tokenizer")
    config = GitConfig(
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": 32,
            "patch_size": 16,
        },
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=30522,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GitForCausalLM(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(folder / "git")
    GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder / "git")
    return folder / "git"


def test_any_image_to_text_model_git(tmp_path, photos):
    git_folder = _tiny_git(tmp_path)
    plain = Captioner(git_folder, max_new_tokens=4)
    assert type(plain.model).__name__ == "GitForCausalLM"
    prompted = Captioner(git_folder, max_new_tokens=4, prompt="a photo of")
    for captioner in (plain, prompted):
        captions = captioner([*photos, Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8))])
        assert len(captions) == len(photos) + 1
        assert all(isinstance(caption, str) and caption for caption in captions)

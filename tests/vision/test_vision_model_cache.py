"""The random-model cache: built once, reused without rewriting, written atomically, loaded via from_pretrained."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, BlipForConditionalGeneration, GroundingDinoForObjectDetection

from cafe_vision.bert_tokenizer import write_bert_tokenizer
from cafe_vision.model_cache import CACHE_ENV_VAR, cached_build, model_cache_dir, recipe_hash
from cafe_vision.presets import get_preset
from cafe_vision.random_blip import random_blip_folder
from cafe_vision.random_grounding_dino import random_grounding_dino_folder
from cafe_vision.random_sam import random_sam_checkpoint
from cafe_vision.sam_model import load_sam

TINY = get_preset("tiny")


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(path.relative_to(folder)): path.stat().st_mtime_ns for path in folder.rglob("*")}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_dir_follows_the_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    assert model_cache_dir() == tmp_path
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert model_cache_dir() == Path.home() / ".cache" / "cafe" / "models"


def test_second_build_reuses_the_folder_without_rewriting(model_cache):
    folder = random_grounding_dino_folder(TINY.grounder, cache_dir=model_cache)
    before = _mtimes(folder)
    assert random_grounding_dino_folder(TINY.grounder, cache_dir=model_cache) == folder
    assert _mtimes(folder) == before
    checkpoint = random_sam_checkpoint(TINY.segmenter, cache_dir=model_cache)
    mtime = checkpoint.stat().st_mtime_ns
    assert random_sam_checkpoint(TINY.segmenter, cache_dir=model_cache) == checkpoint
    assert checkpoint.stat().st_mtime_ns == mtime


def test_cached_folders_load_through_from_pretrained(model_cache):
    blip_folder = random_blip_folder(TINY.captioner, cache_dir=model_cache)
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        path.name for path in blip_folder.iterdir()
    }
    assert not (blip_folder / "_tokenizer").exists()
    blip = BlipForConditionalGeneration.from_pretrained(blip_folder)
    assert blip.config.vision_config.hidden_size == TINY.captioner.vision_hidden_size
    processor = AutoProcessor.from_pretrained(blip_folder)
    assert processor.tokenizer.bos_token_id == blip.config.text_config.bos_token_id == 30522

    dino_folder = random_grounding_dino_folder(TINY.grounder, cache_dir=model_cache)
    dino = GroundingDinoForObjectDetection.from_pretrained(dino_folder)
    assert dino.config.decoder_layers == TINY.grounder.decoder_layers
    tokenizer = AutoProcessor.from_pretrained(dino_folder).tokenizer
    assert tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"]) == [101, 102, 1012, 1029]

    sam = load_sam(TINY.segmenter.arch, random_sam_checkpoint(TINY.segmenter, cache_dir=model_cache))
    assert sam.image_encoder.img_size == TINY.segmenter.arch.image_size_px


def test_builds_are_deterministic_and_leave_global_rng_alone(model_cache, tmp_path):
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.manual_seed(1234)
    again = random_sam_checkpoint(TINY.segmenter, cache_dir=tmp_path)
    assert torch.equal(torch.rand(3), expected_next)  # the fixed build seed did not reset the caller's RNG
    first = torch.load(random_sam_checkpoint(TINY.segmenter, cache_dir=model_cache), weights_only=True)
    second = torch.load(again, weights_only=True)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    blip_a = random_blip_folder(TINY.captioner, cache_dir=model_cache) / "model.safetensors"
    blip_b = random_blip_folder(TINY.captioner, cache_dir=tmp_path) / "model.safetensors"
    assert _digest(blip_a) == _digest(blip_b)


def test_concurrent_builders_keep_the_first_finished_folder(tmp_path):
    """A builder that loses the rename race drops its copy and returns the winner's folder."""
    recipe = {"size": 1}
    calls = []

    def build_winner(folder: Path) -> None:
        calls.append("winner")
        (folder / "weights.bin").write_text("winner")

    def build_loser(folder: Path) -> None:
        calls.append("loser")
        (folder / "weights.bin").write_text("loser")
        # Another process finishes while this one is still building.
        cached_build("model", recipe, build_winner, cache_dir=tmp_path)

    final = cached_build("model", recipe, build_loser, cache_dir=tmp_path)
    assert calls == ["loser", "winner"]
    assert (final / "weights.bin").read_text() == "winner"
    assert [path.name for path in tmp_path.iterdir()] == [final.name]  # no temporary left behind
    assert cached_build("model", recipe, build_loser, cache_dir=tmp_path) == final
    assert calls == ["loser", "winner"]


def test_a_failed_build_leaves_nothing_under_a_final_name(tmp_path):
    def broken(folder: Path) -> None:
        (folder / "half.bin").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cached_build("model", {"size": 1}, broken, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_new_recipe_builds_a_new_folder(tmp_path):
    first = cached_build("model", {"size": 1}, lambda folder: None, cache_dir=tmp_path)
    second = cached_build("model", {"size": 2}, lambda folder: None, cache_dir=tmp_path)
    assert first != second and first.is_dir() and second.is_dir()


def test_bert_tokenizer_from_the_packaged_vocab(tmp_path):
    tokenizer = write_bert_tokenizer(tmp_path / "tokenizer")
    assert len(tokenizer) == 30522
    assert tokenizer("a dog.").input_ids == [101, 1037, 3899, 1012, 102]


def test_temporaries_of_killed_builders_are_removed(tmp_path):
    final_name = f"model-{recipe_hash({'size': 1})}"
    stale = tmp_path / f".{final_name}.tmp-123-abc"
    live = tmp_path / f".{final_name}.tmp-456-def"
    stale.mkdir()
    live.mkdir()
    os.utime(stale, (0, 0))  # last touched in 1970: its builder is long dead
    assert cached_build("model", {"size": 1}, lambda folder: None, cache_dir=tmp_path).name == final_name
    assert {path.name for path in tmp_path.iterdir()} == {final_name, live.name}


def test_a_build_that_leaves_a_component_empty_is_refused_and_not_cached(tmp_path: Path) -> None:
    # What transformers 5 does on a rank > 0 once torch.distributed is up: the folder, no files.
    def build(folder: Path) -> None:
        (folder / "unet").mkdir()
        (folder / "unet" / "config.json").write_text("{}")
        (folder / "text_encoder").mkdir()

    with pytest.raises(RuntimeError, match="text_encoder empty"):
        cached_build("half-built", {"size": 1}, build, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the final folder nor a temporary is left

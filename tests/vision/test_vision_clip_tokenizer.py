"""The CLIP tokenizer rebuilt from open_clip's BPE file is Stable Diffusion's tokenizer."""

from __future__ import annotations

from pathlib import Path

from cafe_vision.clip_tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, MAX_LENGTH_TOKENS, VOCAB_SIZE, write_clip_tokenizer


def test_rebuilt_tokenizer_has_clip_ids(tmp_path: Path) -> None:
    tokenizer = write_clip_tokenizer(tmp_path)
    assert len(tokenizer) == VOCAB_SIZE
    # openai/clip-vit-large-patch14's ids for this prompt (a, photo, of, a, dog).
    ids = tokenizer("a photo of a Dog").input_ids
    assert ids == [BOS_TOKEN_ID, 320, 1125, 539, 320, 1929, EOS_TOKEN_ID]
    padded = tokenizer("a photo", padding="max_length", max_length=MAX_LENGTH_TOKENS, truncation=True).input_ids
    assert len(padded) == MAX_LENGTH_TOKENS and padded[-1] == EOS_TOKEN_ID
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]

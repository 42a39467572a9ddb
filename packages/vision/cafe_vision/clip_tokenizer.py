"""The CLIP tokenizer of Stable Diffusion, offline, from the BPE file that `open_clip_torch` ships.

`openai/clip-vit-large-patch14`'s `vocab.json` and `merges.txt` (the tokenizer of SD 1.x) are a
deterministic function of `bpe_simple_vocab_16e6.txt.gz`: 256 byte symbols, the same with `</w>`,
one token per merge (the first 48,894 merges), then `<|startoftext|>` and `<|endoftext|>`, 49,408
ids in all. Rebuilding them here gives the tiny preset the real vocabulary with no download, and
the files are loaded with `CLIPTokenizer.from_pretrained(folder)`, the path a hub tokenizer takes
(transformers 5 tokenizers built from file arguments may silently ignore them).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from transformers import CLIPTokenizer

BPE_PACKAGE = "open_clip"
BPE_FILE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# 49152 - 256 - 2: the merges CLIP uses (the file holds more; open_clip and OpenAI cut it here).
NUM_MERGES = 48894
VOCAB_SIZE = 49408
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
MAX_LENGTH_TOKENS = 77


def bpe_file() -> Path:
    """The path of `bpe_simple_vocab_16e6.txt.gz` inside the installed open_clip_torch (not imported: it is heavy)."""
    spec = importlib.util.find_spec(BPE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{BPE_PACKAGE} is not installed; it ships the CLIP BPE merges the tiny preset's tokenizer is built from. "
            "Fix: pip install open-clip-torch==3.3.0 (it is pinned in requirements.lock)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BPE_FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed open_clip_torch; reinstall it.")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable character table (the first 256 vocabulary entries, in order)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    byte_values = printable[:]
    code_points = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in byte_values:
            byte_values.append(byte)
            code_points.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, (chr(code) for code in code_points), strict=True))


def write_clip_tokenizer(folder: Path, *, pad_token: str = EOS_TOKEN) -> CLIPTokenizer:
    """Write SD's CLIP tokenizer files (vocab.json, merges.txt, tokenizer_config.json) into `folder`; load them back.

    `pad_token` is `<|endoftext|>` as in SD 1.x (SD 2.x pads with `!`). Raises RuntimeError when the
    rebuilt vocabulary does not have CLIP's size and special ids (the BPE file changed).
    """
    with gzip.open(bpe_file()) as compressed:
        lines = compressed.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(merge) for merge in merges) + "\n")
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH_TOKENS,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": pad_token,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    ids = tokenizer.convert_tokens_to_ids([BOS_TOKEN, EOS_TOKEN])
    if len(tokenizer) != VOCAB_SIZE or ids != [BOS_TOKEN_ID, EOS_TOKEN_ID]:
        raise RuntimeError(
            f"the CLIP tokenizer rebuilt in {folder} has {len(tokenizer)} tokens and special ids {ids}; "
            f"expected {VOCAB_SIZE} and {[BOS_TOKEN_ID, EOS_TOKEN_ID]} (has {BPE_FILE_NAME} changed?)"
        )
    return tokenizer

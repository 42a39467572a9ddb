"""Sample keys: 16 lowercase hex characters, a hash of source identity and subject index.

Keys never hold a dot (webdataset splits member names at the first dot) and never start with
an underscore (webdataset reserves `__key__`-style names), which the hex alphabet guarantees.
"""

from __future__ import annotations

import hashlib
import re

KEY_LENGTH = 16
KEY_PATTERN = re.compile(r"^[0-9a-f]{16}$")


def make_key(source_id: str, subject_index: int = 0) -> str:
    """The deterministic key of subject `subject_index` found in the input `source_id`.

    The same input and subject always give the same key, so a rerun of a job writes the same
    keys and duplicates across reruns are detectable.
    """
    if not source_id:
        raise ValueError("make_key: source_id is empty; pass the input's stable id (uri or sha256)")
    if subject_index < 0:
        raise ValueError(f"make_key: subject_index must be >= 0, got {subject_index}")
    digest = hashlib.sha256(f"{source_id}\x00{subject_index}".encode()).hexdigest()
    return digest[:KEY_LENGTH]


def check_key(key: object) -> str:
    """Return `key` when it follows the key rule, else raise ValueError naming the rule."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValueError(f"key: {key!r} is not 16 lowercase hex characters; build keys with cafe_core.make_key")
    return key

"""The identities of a round's work: a (reference, prompt) pair, its seed, its candidates' keys; source rows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cafe_core import make_key
from cafe_pipelines.round_inputs import InputReference


def pair_seed(seed: int, round_number: int, reference_key: str, prompt_index: int) -> int:
    """The generation seed of one (reference, prompt) pair: its candidates are one batch drawn with it.
    The round is in it, so a reference drawn again in a later round gets new noise."""
    digest = hashlib.sha256(f"seed\x00{seed}\x00{round_number}\x00{reference_key}\x00{prompt_index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def candidate_key(
    reference_key: str, prompt_index: int, candidate_index: int, checkpoint_step: int, round_number: int
) -> str:
    """The sample key of candidate `candidate_index` of a pair, for the checkpoint at `checkpoint_step`, in
    round `round_number` (so sets of different rounds never share a key, even from one checkpoint)."""
    source = f"improve\x00round-{round_number}\x00{reference_key}\x00{prompt_index}\x00step-{checkpoint_step}"
    return make_key(source, candidate_index)


@dataclass(frozen=True)
class Pair:
    """A reference and one prompt of its bank (`prompt_index` in the bank), drawn with `seed`."""

    reference: InputReference
    prompt_index: int
    prompt: str
    seed: int


SOURCES_PER_ROW = 16


def source_chunks(references: list[InputReference]) -> list[list[InputReference]]:
    """The references whose source targets share a source row (and so one embedding call), in order.

    Cut from the full list of references, done or not, so that every run embeds each source in the
    same company and gets the same numbers.
    """
    return [references[start : start + SOURCES_PER_ROW] for start in range(0, len(references), SOURCES_PER_ROW)]


def source_row_key(chunk: list[InputReference]) -> str:
    """The input key of the source row of `chunk` (one of `source_chunks`)."""
    return f"sources:{chunk[0].key}"

"""Duplicate checks of a self-improvement round: exact (sha256 of the encoded target) and near (embeddings).

    index = DedupeIndex(DedupeConfig(), known_sha256=input_target_hashes, known_embeddings=source_embeddings)
    found = index.check(sha256, embedding)      # None, or (reason, detail)
    if found is None:
        index.add(key, sha256, embedding)        # accepted: later candidates are checked against it

Exact duplicates are checked against the input sets' targets and the round's accepted candidates;
near duplicates (cosine of L2-normalized embeddings above `max_cosine`) against the input
references' source targets and the round's accepted candidates. Candidates are checked in the
round's fixed order, so the first of two duplicates is the one kept, on every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DedupeConfig:
    """sha256: drop exact duplicates; max_cosine: drop candidates above this cosine (None: no near check)."""

    sha256: bool = True
    max_cosine: float | None = 0.95

    def __post_init__(self) -> None:
        if self.max_cosine is not None and not -1.0 <= self.max_cosine <= 1.0:
            raise ValueError(f"dedupe.max_cosine: {self.max_cosine} is outside [-1, 1]")


class DedupeIndex:
    """What later candidates are compared with: known hashes and embeddings (named), growing as candidates are kept."""

    def __init__(
        self,
        config: DedupeConfig,
        *,
        known_sha256: Mapping[str, str] | Iterable[str] = (),
        known_embeddings: np.ndarray | None = None,
        known_names: Iterable[str] | None = None,
    ) -> None:
        """known_sha256: hashes (or hash -> what it is, for the message) of targets already in the inputs;
        known_embeddings (N, D) L2-normalized, named by known_names, of images near-duplicates are checked against."""
        self.config = config
        if isinstance(known_sha256, Mapping):
            self._sha256: dict[str, str] = {digest: str(what) for digest, what in known_sha256.items()}
        else:
            self._sha256 = dict.fromkeys(known_sha256, "an input target")
        self._names: list[str] = []
        self._rows: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        if known_embeddings is not None and len(known_embeddings):
            count = len(known_embeddings)
            names = list(known_names) if known_names is not None else [f"known #{i}" for i in range(count)]
            if len(names) != len(known_embeddings):
                raise ValueError(f"known_names: {len(names)} names for {len(known_embeddings)} embeddings")
            self._names = names
            self._rows = [np.asarray(row, dtype=np.float32) for row in known_embeddings]

    @property
    def num_embeddings(self) -> int:
        return len(self._rows)

    def _embeddings(self) -> np.ndarray:
        if self._matrix is None or len(self._matrix) != len(self._rows):
            self._matrix = np.stack(self._rows) if self._rows else np.zeros((0, 0), dtype=np.float32)
        return self._matrix

    def check(self, sha256: str, embedding: np.ndarray | None) -> tuple[str, str] | None:
        """None when the candidate is new; else (`dedupe.sha256` | `dedupe.near`, what it duplicates)."""
        if self.config.sha256 and sha256 in self._sha256:
            return "dedupe.sha256", f"same target bytes as {self._sha256[sha256]}"
        if self.config.max_cosine is not None and embedding is not None and self._rows:
            matrix = self._embeddings()
            vector = np.asarray(embedding, dtype=np.float32)
            if matrix.shape[1] != vector.shape[0]:
                raise ValueError(f"embedding of size {vector.shape[0]}; the index holds size {matrix.shape[1]}")
            cosines = matrix @ vector
            best = int(np.argmax(cosines))
            if float(cosines[best]) > self.config.max_cosine:
                detail = f"cosine {float(cosines[best]):.4f} > {self.config.max_cosine} with {self._names[best]}"
                return "dedupe.near", detail
        return None

    def add_known(self, name: str, embedding: np.ndarray) -> None:
        """One more image to check near duplicates against (e.g. a reference's source target)."""
        self._names.append(name)
        self._rows.append(np.asarray(embedding, dtype=np.float32))

    def add(self, name: str, sha256: str, embedding: np.ndarray | None) -> None:
        """Remember a kept candidate (by name, e.g. its key) for the checks of the candidates after it."""
        self._sha256.setdefault(sha256, f"candidate {name}")
        if embedding is not None:
            self._names.append(f"candidate {name}")
            self._rows.append(np.asarray(embedding, dtype=np.float32))

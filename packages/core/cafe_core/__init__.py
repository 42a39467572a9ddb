"""cafe_core: the triple data contract and shard IO. No torch, no ray (checked by import-linter)."""

from cafe_core.flags import Flag, flagged_keys
from cafe_core.keys import check_key, make_key
from cafe_core.metadata import SCHEMA_VERSION, metadata_problems
from cafe_core.reader import ReadReport, TripleReader, read_triples, resolve_shards
from cafe_core.shardset import ShardSet, WriteMode
from cafe_core.status import InputStatus
from cafe_core.triple import Triple, TripleError
from cafe_core.writer import EncodedSample, ShardWriter

__all__ = [
    "SCHEMA_VERSION",
    "EncodedSample",
    "Flag",
    "InputStatus",
    "ReadReport",
    "ShardSet",
    "ShardWriter",
    "Triple",
    "TripleError",
    "TripleReader",
    "WriteMode",
    "check_key",
    "flagged_keys",
    "make_key",
    "metadata_problems",
    "read_triples",
    "resolve_shards",
]

"""cafe_inspector: the shard browser, a small web app to look through triples and flag bad ones.

    cafe inspect serve DIR [--host 127.0.0.1] [--port 8765] [--token TOKEN]

Imports cafe_core only among cafe packages (checked by import-linter): no torch, no ray.
Read-only toward shards; the one file it writes is each set's `flags.parquet`.
"""

from cafe_inspector.app import create_app

__all__ = ["create_app"]

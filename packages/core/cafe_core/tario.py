"""Plain POSIX (ustar) tar writing and streaming reading, the byte layer under shards.

Why not `tarfile`: the writer builds each 512-byte header directly (a fixed mtime and owner,
so the same samples always give byte-identical shards) and hashes the bytes as they go out,
so the shard index gets its md5 without reading the file again. The reader walks headers
itself so that a truncated or garbled shard is reported as `TarCorruptError` at the exact
member, instead of whatever a generic reader happens to raise. Output is ordinary tar: GNU
tar, Python's tarfile, webdataset and wids all read it.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 512
RECORD = 20 * BLOCK  # tar's default blocking factor; tarfile pads the archive the same way
FIXED_MTIME = 0  # deterministic bytes across reruns; the set's json records real times
_ZERO_BLOCK = bytes(BLOCK)


class TarCorruptError(ValueError):
    """A tar stream ended early or holds a header that is not a tar header."""


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def ustar_header(name: str, size: int, mtime: int = FIXED_MTIME) -> bytes:
    """The 512-byte header of a regular file member `name` of `size` bytes."""
    raw_name = name.encode("utf-8")
    if len(raw_name) > 100:
        raise ValueError(f"tar member name {name!r} is longer than the 100 bytes ustar allows")
    header = bytearray(BLOCK)
    header[0 : len(raw_name)] = raw_name
    header[100:108] = _octal(0o644, 8)
    header[108:116] = _octal(0, 8)  # uid
    header[116:124] = _octal(0, 8)  # gid
    header[124:136] = _octal(size, 12)
    header[136:148] = _octal(mtime, 12)
    header[148:156] = b" " * 8  # checksum field counts as spaces while summing
    header[156:157] = b"0"
    header[257:263] = b"ustar\x00"
    header[263:265] = b"00"
    checksum = sum(header)
    header[148:156] = b"%06o\x00 " % checksum
    return bytes(header)


class _BackgroundMD5:
    """md5 on a worker thread. hashlib releases the GIL while it hashes a large buffer, so hashing a
    member overlaps writing the next one: the md5 the shard index needs costs no wall time of its own
    where a second core is free. The queue is bounded, so memory stays a few members deep."""

    def __init__(self) -> None:
        self._md5 = hashlib.md5()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name="tar-md5", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._md5.update(chunk)

    def update(self, data: bytes) -> None:
        self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        return self._md5.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class TarStreamWriter:
    """Appends regular-file members to a binary stream and keeps the md5 of all bytes written.
    Call `finish` (or `close`, to abandon the stream) when done: it ends the hashing thread."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._md5 = _BackgroundMD5()
        self.num_bytes = 0

    def _emit(self, data: bytes) -> None:
        self._stream.write(data)
        self._md5.update(data)
        self.num_bytes += len(data)

    def add(self, name: str, data: bytes) -> None:
        # One buffer per member (header, data, padding): a third of the writes and queue hand-offs.
        remainder = len(data) % BLOCK
        padding = bytes(BLOCK - remainder) if remainder else b""
        self._emit(b"".join((ustar_header(name, len(data)), data, padding)))

    def finish(self) -> str:
        """Write the end-of-archive blocks and record padding; return the md5 hex digest."""
        self._emit(_ZERO_BLOCK * 2)
        remainder = self.num_bytes % RECORD
        if remainder:
            self._emit(bytes(RECORD - remainder))
        return self._md5.hexdigest()

    def close(self) -> None:
        """Stop hashing without a digest (the stream is being abandoned)."""
        self._md5.close()


def _read_exact(stream: BinaryIO, size: int, what: str, offset: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise TarCorruptError(f"truncated: {what} at byte {offset} wants {size} bytes, found {len(data)}")
    return data


def _header_checksum_ok(header: bytes) -> bool:
    try:
        stored = int(header[148:156].replace(b"\x00", b" ").strip() or b"-1", 8)
    except ValueError:
        return False
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    return stored == unsigned


def _header_field(header: bytes, start: int, end: int) -> bytes:
    return header[start:end].split(b"\x00", 1)[0]


_PAX_PATH = re.compile(rb"\d+ path=([^\n]*)\n")


def iter_tar_entries(stream: BinaryIO) -> Iterator[tuple[str, int, int]]:
    """Yield (name, data offset, size) of each regular file, seeking past the data.

    For random access later (read `size` bytes at `offset`): listing a large tar this way
    reads only its headers. Raises TarCorruptError as `iter_tar_members` does.
    """
    start = stream.tell()
    length = stream.seek(0, 2) - start  # seeking past data never fails: check against the length
    stream.seek(start)
    offset = 0
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if not header or header == _ZERO_BLOCK:
            return
        name, size, typeflag = _parse_header(header, offset)
        padded = -(-size // BLOCK) * BLOCK
        data_offset = offset + BLOCK
        if typeflag in (b"L", b"x"):
            data = _read_exact(stream, padded, f"member {name!r}", offset)[:size]
            long_name = _long_name(typeflag, data) or long_name
        else:
            if data_offset + size > length:
                raise TarCorruptError(
                    f"truncated: member {name!r} at byte {offset} wants {size} bytes, found {length - data_offset}"
                )
            stream.seek(padded, 1)
            if long_name is not None:
                name, long_name = long_name, None
            if typeflag in (b"0", b"\x00", b"7"):
                yield name, data_offset, size
        offset = data_offset + padded


def _parse_header(header: bytes, offset: int) -> tuple[str, int, bytes]:
    if len(header) != BLOCK:
        raise TarCorruptError(f"truncated: header at byte {offset} has {len(header)} of {BLOCK} bytes")
    if not _header_checksum_ok(header):
        raise TarCorruptError(f"not a tar header at byte {offset} (checksum mismatch): garbage or corruption")
    size_field = _header_field(header, 124, 136).strip()
    try:
        size = int(size_field or b"0", 8)
    except ValueError as exc:
        raise TarCorruptError(f"bad size field {size_field!r} in the header at byte {offset}") from exc
    name = _header_field(header, 0, 100).decode("utf-8", errors="replace")
    prefix = _header_field(header, 345, 500)
    if header[257:262] == b"ustar" and prefix:
        name = prefix.decode("utf-8", errors="replace") + "/" + name
    return name, size, header[156:157]


def _long_name(typeflag: bytes, data: bytes) -> str | None:
    """The name a GNU long-name (L) or pax (x) member gives the member after it."""
    if typeflag == b"L":
        return data.rstrip(b"\x00").decode("utf-8", errors="replace")
    match = _PAX_PATH.search(data)
    return match.group(1).decode("utf-8", errors="replace") if match else None


def iter_tar_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """Yield (name, data) of each regular file in a tar stream, in order.

    Directories and other non-file members are passed over; GNU long names and pax `path`
    records are honoured. Raises TarCorruptError on a truncated stream or a bad header.
    """
    offset = 0
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if not header or header == _ZERO_BLOCK:
            return  # end of archive (a missing end marker after a whole member is tolerated)
        name, size, typeflag = _parse_header(header, offset)
        padded = -(-size // BLOCK) * BLOCK
        data = _read_exact(stream, padded, f"member {name!r}", offset)[:size]
        offset += BLOCK + padded
        if typeflag in (b"L", b"x"):
            long_name = _long_name(typeflag, data) or long_name
            continue
        if long_name is not None:
            name, long_name = long_name, None
        if typeflag in (b"0", b"\x00", b"7"):
            yield name, data


class HashingReader:
    """Wraps a binary stream; `md5` covers every byte read through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.md5 = hashlib.md5()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.md5.update(data)
        return data

    def drain(self) -> str:
        """Read what is left (end blocks, padding) and return the md5 hex digest of the whole stream."""
        while self.read(1 << 20):
            pass
        return self.md5.hexdigest()

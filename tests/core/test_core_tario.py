"""The tar byte layer: plain ustar out, strict streaming reads in."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from cafe_core.tario import (
    RECORD,
    HashingReader,
    TarCorruptError,
    TarStreamWriter,
    iter_tar_entries,
    iter_tar_members,
    ustar_header,
)

MEMBERS = [("0123456789abcdef.prompt.txt", b"a photo of red cube"), ("0123456789abcdef.json", b"{}"), ("x.bin", b"")]


def write(members) -> tuple[bytes, str, int]:
    buf = io.BytesIO()
    writer = TarStreamWriter(buf)
    for name, data in members:
        writer.add(name, data)
    md5 = writer.finish()
    return buf.getvalue(), md5, writer.num_bytes


def test_writer_output_is_plain_tar_with_its_md5():
    data, md5, num_bytes = write([*MEMBERS, ("big.bin", bytes(range(256)) * 40)])
    assert md5 == hashlib.md5(data).hexdigest()
    assert num_bytes == len(data)
    assert len(data) % RECORD == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == [n for n, _ in MEMBERS] + ["big.bin"]
        assert all(i.mtime == 0 and i.uid == 0 and i.mode == 0o644 for i in infos)
        assert tar.extractfile("big.bin").read() == bytes(range(256)) * 40
    assert write(MEMBERS)[0] == write(MEMBERS)[0]


def test_round_trip_through_iter_tar_members():
    data, _, _ = write(MEMBERS)
    assert list(iter_tar_members(io.BytesIO(data))) == MEMBERS


def test_header_rejects_names_over_100_bytes():
    with pytest.raises(ValueError, match="100 bytes"):
        ustar_header("k" * 101, 0)
    assert len(ustar_header("k" * 100, 5)) == 512


def test_reader_honours_gnu_long_names_and_pax_paths():
    long_name = "deep/" * 30 + "0123456789abcdef.prompt.txt"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            info = tarfile.TarInfo(long_name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
            folder = tarfile.TarInfo("a-folder")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
        assert list(iter_tar_members(io.BytesIO(buf.getvalue()))) == [(long_name, b"abc")]


def test_reader_reports_truncation_and_garbage():
    data, _, _ = write(MEMBERS)
    with pytest.raises(TarCorruptError, match="truncated"):
        list(iter_tar_members(io.BytesIO(data[:520])))
    with pytest.raises(TarCorruptError, match="truncated: header"):
        list(iter_tar_members(io.BytesIO(data[: 1024 + 100])))
    garbled = bytearray(data)
    garbled[1024:1536] = b"\x07" * 512
    with pytest.raises(TarCorruptError, match="not a tar header at byte 1024"):
        list(iter_tar_members(io.BytesIO(bytes(garbled))))


def test_hashing_reader_covers_the_whole_stream():
    data, md5, _ = write(MEMBERS)
    stream = HashingReader(io.BytesIO(data))
    assert list(iter_tar_members(stream)) == MEMBERS
    assert stream.drain() == md5


def test_iter_tar_entries_gives_data_offsets():
    data, _, _ = write(MEMBERS)
    entries = list(iter_tar_entries(io.BytesIO(data)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert entries == [(i.name, i.offset_data, i.size) for i in tar.getmembers()]
    for (_name, payload), (_, offset, size) in zip(MEMBERS, entries, strict=True):
        assert data[offset : offset + size] == payload


def test_iter_tar_entries_reports_truncation():
    data, _, _ = write(MEMBERS)
    with pytest.raises(TarCorruptError, match="truncated"):
        list(iter_tar_entries(io.BytesIO(data[: 512 + 5])))

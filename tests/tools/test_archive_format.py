"""The seekable container round-trips any frames, stays a plain zstd stream, and rejects damage."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.archive_format import (
    TRAILER_SIZE,
    ArchiveFormatError,
    ContainerWriter,
    CountingFile,
    make_decompressor,
    read_dictionary,
    read_frame,
    read_table,
)

frame_contents = st.lists(st.binary(min_size=0, max_size=3000), min_size=0, max_size=8)


def _write(frames: list[bytes], dictionary: bytes | None = None, level: int = 3) -> bytes:
    buf = io.BytesIO()
    w = ContainerWriter(buf)
    cctx = zstandard.ZstdCompressor(
        level=level, write_checksum=True,
        dict_data=zstandard.ZstdCompressionDict(dictionary) if dictionary else None,
    )
    for i, content in enumerate(frames):
        w.add_frame(cctx.compress(content), len(content), 10 * i, 10 * i + 5, i)
    w.finish(dictionary)
    return buf.getvalue()


def _open(tmp_path: Path, data: bytes) -> CountingFile:
    path = tmp_path / "a.zst"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    return CountingFile(fd, len(data))


@settings(max_examples=40, deadline=None)
@given(frames=frame_contents)
def test_round_trip_any_frames(
    tmp_path_factory: pytest.TempPathFactory, frames: list[bytes]
) -> None:
    data = _write(frames)
    src = _open(tmp_path_factory.mktemp("rt"), data)
    try:
        table = read_table(src)
        assert len(table.frames) == len(frames)
        dctx = make_decompressor(read_dictionary(src, table))
        got = [read_frame(src, e, dctx) for e in table.frames]
        assert got == frames
        assert [e.record_count for e in table.frames] == list(range(len(frames)))
        assert [(e.min_ts_ns, e.max_ts_ns) for e in table.frames] == [
            (10 * i, 10 * i + 5) for i in range(len(frames))
        ]
        # the whole file is an ordinary zstd stream of the concatenated contents
        whole = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
        assert whole.decompress(data) == b"".join(frames)
    finally:
        os.close(src.fd)


def test_embedded_dictionary_is_used_and_found(tmp_path: Path) -> None:
    samples = [b'{"type":"l2update","product_id":"BTC-USD","changes":[["buy","%d","0.1"]]}' % i
               for i in range(2000)]
    dictionary = zstandard.train_dictionary(4096, samples).as_bytes()
    frames = [b"\n".join(samples[i:i + 100]) for i in range(0, 400, 100)]
    src = _open(tmp_path, _write(frames, dictionary))
    try:
        table = read_table(src)
        assert table.dict_size == len(dictionary)
        assert read_dictionary(src, table) == dictionary
        dctx = make_decompressor(read_dictionary(src, table))
        assert [read_frame(src, e, dctx) for e in table.frames] == frames
        with pytest.raises(ArchiveFormatError):
            read_frame(src, table.frames[0], make_decompressor(None))
    finally:
        os.close(src.fd)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd command-line tool not installed")
def test_zstd_cli_decompresses_the_archive(tmp_path: Path) -> None:
    frames = [os.urandom(100) * 50, b"hello" * 1000, b""]
    path = tmp_path / "x.zst"
    path.write_bytes(_write(frames))
    out = subprocess.run(["zstd", "-q", "-d", "-c", str(path)], check=True, capture_output=True)
    assert out.stdout == b"".join(frames)


def test_reading_one_frame_reads_only_that_frame(tmp_path: Path) -> None:
    frames = [os.urandom(5000) for _ in range(6)]
    data = _write(frames)
    src = _open(tmp_path, data)
    try:
        table = read_table(src)
        table_bytes = src.bytes_read
        assert table_bytes == len(data) - table.table_offset
        read_frame(src, table.frames[4], make_decompressor(None))
        assert src.bytes_read - table_bytes == table.frames[4].compressed_size
    finally:
        os.close(src.fd)


@pytest.mark.parametrize("where", ["trailer_magic", "table_body", "trailer_count", "truncate"])
def test_damaged_tables_are_rejected(tmp_path: Path, where: str) -> None:
    data = bytearray(_write([b"abc" * 100, b"def" * 100]))
    if where == "trailer_magic":
        data[-1] ^= 0xFF
    elif where == "table_body":
        data[-TRAILER_SIZE - 5] ^= 0x01
    elif where == "trailer_count":
        data[-TRAILER_SIZE + 12] ^= 0x01
    else:
        data = data[:-7]
    src = _open(tmp_path, bytes(data))
    try:
        with pytest.raises(ArchiveFormatError):
            read_table(src)
    finally:
        os.close(src.fd)


def test_flipped_frame_byte_is_a_frame_error(tmp_path: Path) -> None:
    data = bytearray(_write([os.urandom(64) * 64, b"x" * 4000]))
    data[20] ^= 0x40
    src = _open(tmp_path, bytes(data))
    try:
        table = read_table(src)
        with pytest.raises(ArchiveFormatError) as exc:
            read_frame(src, table.frames[0], make_decompressor(None))
        assert exc.value.offset == 0
    finally:
        os.close(src.fd)


def test_empty_and_foreign_files_are_rejected(tmp_path: Path) -> None:
    for data in (b"", b"not an archive at all, just some text\n" * 3):
        src = _open(tmp_path, data)
        try:
            with pytest.raises(ArchiveFormatError):
                read_table(src)
        finally:
            os.close(src.fd)

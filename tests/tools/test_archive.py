"""Segment → archive → the same records, with seeks that read only the frames they need."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from segfiles import DAY, DAY_NS, all_records, make_batches, message, write_segment

from storage.archive import ArchiveReader, CorruptArchive
from storage.archive_format import ENTRY_SIZE, TRAILER_SIZE
from storage.compact import compact_segment
from storage.format import HEADER_SIZE
from storage.reader import SegmentReader

TODAY = DAY + dt.timedelta(days=1)


def _archive(tmp_path: Path, n: int = 12_000, per_batch: int = 500, **kw: object) -> Path:
    batches = make_batches(n, per_batch)
    src = write_segment(tmp_path, batches)
    res = compact_segment(src, today=TODAY, **kw)  # type: ignore[arg-type]
    assert res.action == "compacted"
    return res.archive


def test_round_trip_records_identical(tmp_path: Path) -> None:
    batches = make_batches(12_000, 500, markers_every=997)
    src = write_segment(tmp_path, batches, prealloc=8 << 20)
    original = src.read_bytes()
    res = compact_segment(src, today=TODAY)
    assert not src.exists() and res.archive.exists()
    assert res.records == 12_000
    with ArchiveReader.open(res.archive) as reader:
        assert reader.header.record_count == 12_000 and reader.header.sealed
        got = [(r.ts_ns, r.kind, r.payload) for r in reader.records()]
        assert got == all_records(batches)
        offsets = [r.offset for r in reader.records()]
        # offsets are the source file's: the payload bytes really sit there in the original
        for (_, _, payload), off in zip(got[::1000], offsets[::1000], strict=True):
            assert original[off:off + len(payload)] == payload
        assert len(reader.data_frames) > 2  # ~1 MiB frames, several of them
        infos = list(reader.batches())
        assert infos[0].offset == HEADER_SIZE and len(infos) == len(batches)
        assert all(a.offset + a.length == b.offset for a, b in itertools.pairwise(infos))
        assert infos[-1].offset + infos[-1].length == reader.header.committed_len
    # the decompressed archive is byte for byte the source's committed bytes
    whole = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
    restored = whole.decompress(res.archive.read_bytes())
    assert restored == original[:reader.header.committed_len]
    # ... which is a sealed segment the segment reader opens as it is
    copy = tmp_path / "restored.seg"
    copy.write_bytes(restored)
    with SegmentReader.open(copy) as seg:
        assert seg.header.sealed
        assert [(r.ts_ns, r.kind, r.payload) for r in seg.records()] == all_records(batches)


def test_archive_reader_matches_segment_reader(tmp_path: Path) -> None:
    """Same records, same offsets, same time windows (from inclusive, to exclusive)."""
    batches = make_batches(9000, 300, markers_every=1234)
    src = write_segment(tmp_path, batches)
    start = batches[0][0][0]
    windows = [(None, None), (start + 2_500_000_000, None), (None, start + 700_000_000),
               (start + 1_000_000_000, start + 1_000_000_001), (start + 10**12, None)]
    with SegmentReader.open(src) as seg:
        expected = {w: list(seg.records(*w)) for w in windows}
        expected_batches = list(seg.batches())
    arch = compact_segment(src, today=TODAY, frame_target=100_000).archive
    with ArchiveReader.open(arch) as reader:
        for w in windows:
            assert list(reader.records(*w)) == expected[w], w
        assert list(reader.batches()) == expected_batches


def test_round_trip_with_dictionary(tmp_path: Path) -> None:
    samples = [message(i) for i in range(3000)]
    dictionary = zstandard.train_dictionary(16_384, samples).as_bytes()
    batches = make_batches(4000, 400)
    src = write_segment(tmp_path, batches)
    res = compact_segment(src, today=TODAY, dictionary=dictionary, level=5)
    with ArchiveReader.open(res.archive) as reader:
        assert reader.table.dict_size == len(dictionary)
        assert [(r.ts_ns, r.kind, r.payload) for r in reader.records()] == all_records(batches)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=0, max_size=12),
       target=st.sampled_from([1, 4096, 1 << 20]))
def test_round_trip_any_batching(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], target: int
) -> None:
    root = tmp_path_factory.mktemp("any")
    batches, start = [], 0
    for n in sizes:
        b = make_batches(n, n, start_ns=DAY_NS + start * 1000, step_ns=1000)[0]
        batches.append([(ts, k, p + b"x" * (ts % 7)) for ts, k, p in b])
        start += n
    src = write_segment(root, batches)
    res = compact_segment(src, today=TODAY, frame_target=target)
    with ArchiveReader.open(res.archive) as reader:
        assert [(r.ts_ns, r.kind, r.payload) for r in reader.records()] == all_records(batches)
        assert reader.header.record_count == sum(sizes)


def test_from_reads_only_the_frames_it_needs(tmp_path: Path) -> None:
    arch = _archive(tmp_path, n=40_000, per_batch=500)
    with ArchiveReader.open(arch) as reader:
        opening = reader.bytes_read  # trailer + seek table + header frame
        frames = reader.data_frames
        assert len(frames) >= 6
        target = frames[4]
        from_ns = (target.min_ts_ns + target.max_ts_ns) // 2
        it = reader.records(from_ns=from_ns)
        first = next(it)
        assert first.ts_ns >= from_ns
        # exactly one data frame was fetched: the one holding from_ns
        assert reader.bytes_read - opening == target.compressed_size
        rest = list(it)
        assert reader.bytes_read - opening == sum(f.compressed_size for f in frames[4:])
        assert len(rest) + 1 == sum(1 for r in _all(arch) if r >= from_ns)
    with ArchiveReader.open(arch) as reader:
        opening = reader.bytes_read
        window = list(reader.records(from_ns=frames[2].min_ts_ns, to_ns=frames[3].max_ts_ns + 1))
        assert reader.bytes_read - opening == frames[2].compressed_size + frames[3].compressed_size
        assert len(window) == frames[2].record_count + frames[3].record_count
        # opening read the trailer, the seek table and the header frame, nothing else
        table_bytes = TRAILER_SIZE + 8 + ENTRY_SIZE * len(reader.table.frames)
        assert opening == table_bytes + reader.table.frames[0].compressed_size


def _all(arch: Path) -> list[int]:
    with ArchiveReader.open(arch) as reader:
        return [r.ts_ns for r in reader.records()]


def test_corrupt_frame_costs_that_frame_only_and_is_reported(tmp_path: Path) -> None:
    arch = _archive(tmp_path)
    total = len(_all(arch))
    data = bytearray(arch.read_bytes())
    with ArchiveReader.open(arch) as reader:
        victim = reader.data_frames[1]
    data[victim.compressed_offset + victim.compressed_size // 2] ^= 0x10
    arch.write_bytes(bytes(data))
    with ArchiveReader.open(arch) as reader:
        got = list(reader.records())
        assert len(got) == total - victim.record_count  # the frames after it still read
        [d] = reader.damage
        assert (d.offset, d.length, d.records) == (
            victim.compressed_offset, victim.compressed_size, victim.record_count)
        assert f"{arch}@{victim.compressed_offset}" in str(d)


def test_truncated_seek_table_is_rebuilt_from_the_frames(tmp_path: Path) -> None:
    arch = _archive(tmp_path)
    expected = _all(arch)
    data = arch.read_bytes()
    arch.write_bytes(data[:-100])
    with ArchiveReader.open(arch) as reader:
        assert reader.table_rebuilt and [r.ts_ns for r in reader.records()] == expected
        assert "seek table damaged" in reader.damage[0].reason
    arch.write_bytes(b"\0" * 50)
    with pytest.raises(CorruptArchive):
        ArchiveReader.open(arch)


@settings(max_examples=25, deadline=None)
@given(ts=st.lists(st.integers(0, 1000), min_size=1, max_size=120),
       per_batch=st.integers(1, 9), target=st.sampled_from([1, 200, 2000]),
       window=st.tuples(st.one_of(st.none(), st.integers(-5, 1005)),
                        st.one_of(st.none(), st.integers(-5, 1005))))
def test_time_window_equals_a_full_filter_even_out_of_order(
    tmp_path_factory: pytest.TempPathFactory, ts: list[int], per_batch: int, target: int,
    window: tuple[int | None, int | None],
) -> None:
    """Frame skipping by seek-table bounds never drops a record, whatever the time order."""
    root = tmp_path_factory.mktemp("win")
    recs = [(DAY_NS + t * 1000, 0, b'{"i":%d}' % i) for i, t in enumerate(ts)]
    batches = [recs[i:i + per_batch] for i in range(0, len(recs), per_batch)]
    src = write_segment(root, batches)
    arch = compact_segment(src, today=TODAY, frame_target=target).archive
    lo = None if window[0] is None else DAY_NS + window[0] * 1000
    hi = None if window[1] is None else DAY_NS + window[1] * 1000
    expected = [r for r in recs if (lo is None or r[0] >= lo) and (hi is None or r[0] < hi)]
    with ArchiveReader.open(arch) as reader:
        assert [(r.ts_ns, r.kind, r.payload) for r in reader.records(lo, hi)] == expected

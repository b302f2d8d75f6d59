"""Markers at a glance: `ls` counts them per segment (batch kinds columns for .seg, per-frame
seek-table counts for archives), `cat --markers-only/--kind` lists them, and the counts in an
archive are checked by compaction and by `verify`. Segments are written by the real Engine."""

from __future__ import annotations

import datetime as dt
import os
import struct
from collections import Counter
from pathlib import Path

import google_crc32c
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segfiles import DAY, DAY_NS, message, write_segment

from storage.archive import ArchiveReader, CorruptArchive
from storage.archive_format import (
    ENTRY_V1,
    SKIPPABLE_HEADER,
    SKIPPABLE_TABLE_MAGIC,
    TRAILER,
    TRAILER_MAGIC,
    CountingFile,
    encode_table,
    read_table,
)
from storage.compact import compact_segment
from storage.engine import Engine, EngineConfig
from storage.format import batch_records, read_batch
from storage.markers import MarkerCounts, SegmentScan, count_kinds, segment_marker_counts
from storage.records import RecordKind
from tools.inspect_cli import main

TODAY = DAY + dt.timedelta(days=1)
K = RecordKind
START = DAY_NS + 3_600_000_000_000

Plan = list[tuple[int, int, bytes]]  # ts_ns, kind, payload


def _plan(n: int, every: dict[int, RecordKind], seed: int = 0) -> Plan:
    """n records 1 ms apart; record i is a marker of kind every[k] when i % k == k - 1."""
    out: Plan = []
    for i in range(n):
        kind = next((kd for k, kd in every.items() if i % k == k - 1), K.DATA)
        payload = (b'{"event":"%s","i":%d}' % (kind.name.lower().encode(), i)
                   if kind else message(i + seed))
        out.append((START + i * 1_000_000, int(kind), payload))
    return out


PLANS: dict[tuple[str, str], Plan] = {
    # many batches (commit every 250 records), markers of four kinds spread over them
    ("BTC-USD", "level2"): _plan(6000, {997: K.GAP, 1499: K.DISCONNECT, 1500: K.RECONNECT,
                                       2203: K.DROPPED}),
    # no markers at all
    ("ETH-USD", "ticker"): _plan(900, {}, seed=7),
    # markers only at the very end (a frame of its own once archived with small frames)
    ("SOL-USD", "market_trades"): [*_plan(3000, {}, seed=3),
                                    (START + 3_000_000_000, int(K.GAP), b'{"event":"gap"}'),
                                    (START + 3_001_000_000, int(K.NOTE), b'{"event":"note"}')],
}


def _expected(plan: Plan) -> MarkerCounts:
    c = Counter(k for _, k, _ in plan)
    return MarkerCounts(gap=c[K.GAP], disconnect=c[K.DISCONNECT], reconnect=c[K.RECONNECT],
                        subscribe=c[K.SUBSCRIBE], dropped=c[K.DROPPED], note=c[K.NOTE])


def _record(root: Path, plans: dict[tuple[str, str], Plan], *, close: bool = True) -> Engine:
    eng = Engine(EngineConfig(root=root, backend="pwrite", commit_records=250))
    longest = max(len(p) for p in plans.values())
    for i in range(longest):
        for (product, channel), plan in plans.items():
            if i < len(plan):
                ts, kind, payload = plan[i]
                eng.append(eng.stream(product, channel), ts, payload, K(kind))
        if eng.commit_due():
            eng.commit(now_ns=START)
    eng.commit(now_ns=START)
    if close:
        eng.close()
    return eng


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def _ls_markers(capfd: pytest.CaptureFixture[str], root: Path) -> dict[str, dict[str, int]]:
    code, out, err = run(capfd, "ls", str(root), "--json")
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    return {f"{r['product']}/{r['channel']}:{r['state']}": r["markers"]
            for r in rows if "path" in r}


def _want(state: str) -> dict[str, dict[str, int]]:
    return {f"{p}/{c}:{state}": _expected(plan).as_dict() for (p, c), plan in PLANS.items()}


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _record(root, PLANS)
    return root


def test_ls_counts_markers_of_live_segments(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    eng = _record(root, PLANS, close=False)  # committed, not sealed: live segments
    try:
        assert _ls_markers(capfd, root) == _want("live")
        # more markers committed: the next ls sees them
        s = eng.stream("ETH-USD", "ticker")
        eng.append(s, START + 10**10, b'{"event":"dropped","count":5}', K.DROPPED)
        eng.commit(now_ns=START)
        got = _ls_markers(capfd, root)["ETH-USD/ticker:live"]
        assert got["dropped"] == 1 and sum(got.values()) == 1
    finally:
        eng.close()


def test_ls_counts_markers_of_sealed_and_archived_segments(
    recorded: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert _ls_markers(capfd, recorded) == _want("sealed")
    # the table: GAP, DISC and DROP columns, and the totals line
    code, out, _ = run(capfd, "ls", str(recorded))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[5:8] == ["GAP", "DISC", "DROP"]
    btc = next(r for r in rows if r.startswith("BTC-USD/level2"))
    want = _expected(PLANS[("BTC-USD", "level2")])
    assert btc.split()[5:8] == [str(want.gap), str(want.disconnect), str(want.dropped)]
    total = _expected([r for p in PLANS.values() for r in p])
    assert f"markers: {total.gap} gap, {total.disconnect} disconnect" in rows[-2]
    assert rows[-1].startswith(f"possible loss: {total.possible_loss} marker(s)")
    for path in recorded.rglob("*.seg"):
        res = compact_segment(path, today=TODAY, frame_target=16 << 10)
        assert res.action == "compacted"
    assert _ls_markers(capfd, recorded) == _want("archived")


def test_archive_frames_carry_the_marker_counts_of_their_records(recorded: Path) -> None:
    for path in recorded.rglob("*.seg"):
        compact_segment(path, today=TODAY, frame_target=16 << 10)
    for archive in recorded.rglob("*.seg.zst"):
        with ArchiveReader.open(archive) as reader:
            assert reader.table.frames[0].markers == MarkerCounts()  # the header frame
            assert len(reader.data_frames) > 3
            for entry in reader.data_frames:
                kinds = bytes(r.kind for _, blob in
                              reader.frame_batches(entry, reader.frame_content(entry))
                              for r in batch_records(blob, 0))
                assert entry.markers == count_kinds(kinds)
            key = (reader.header.product, reader.header.channel)
            assert reader.marker_counts == _expected(PLANS[key])


def _seg(root: Path, product: str, channel: str) -> Path:
    return next((root / product / channel).glob("*.seg*"))


@pytest.mark.parametrize("state", ["live", "sealed", "archived"])
def test_cat_markers_only_lists_every_marker(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], state: str
) -> None:
    root = tmp_path / "data"
    eng = _record(root, PLANS, close=state != "live")
    try:
        if state == "archived":
            for path in root.rglob("*.seg"):
                compact_segment(path, today=TODAY, frame_target=16 << 10)
        code, out, err = run(capfd, "cat", str(root), "--markers-only", "--all-markers",
                             "--format", "jsonl")
        assert code == 0, err
        got = [(r["product"], r["channel"], r["ts_ns"], r["kind"], r["msg"])
               for r in map(orjson.loads, out.splitlines())]
        want = [(p, c, ts, K(k).name.lower(), orjson.loads(payload))
                for (p, c), plan in sorted(PLANS.items()) for ts, k, payload in plan if k]
        assert got == want
        # one kind, one stream, a time window (from inclusive, to exclusive)
        btc = PLANS[("BTC-USD", "level2")]
        gaps = [ts for ts, k, _ in btc if k == K.GAP]
        code, out, _ = run(capfd, "cat", str(root), "-p", "BTC-USD", "--kind", "gap",
                           "--format", "jsonl", "--from", str(gaps[1]), "--to", str(gaps[-1]))
        assert [orjson.loads(line)["ts_ns"] for line in out.splitlines()] == gaps[1:-1]
        # several kinds; 'data' may be selected too
        code, out, _ = run(capfd, "cat", str(_seg(root, "SOL-USD", "market_trades")),
                           "--kind", "note,data", "--format", "jsonl")
        kinds = Counter(orjson.loads(line)["kind"] for line in out.splitlines())
        assert kinds == {"data": 3000, "note": 1}
    finally:
        eng.close()


def test_cat_markers_only_raw_prints_to_stdout(
    recorded: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capfd, "cat", str(recorded), "-p", "BTC-USD", "--markers-only",
                          "--all-markers")
    assert code == 0 and err == ""
    lines = out.splitlines()
    want = _expected(PLANS[("BTC-USD", "level2")])
    assert len(lines) == want.total
    assert sum(line.startswith("# GAP ") for line in lines) == want.gap
    assert all(" BTC-USD/level2 {" in line for line in lines)
    # with data selected as well, markers stay on stderr so stdout remains pure JSON
    code, out, err = run(capfd, "cat", str(recorded), "-p", "BTC-USD", "--kind", "data,gap")
    assert code == 0 and err.count("# GAP ") == want.gap and "# GAP" not in out


def test_cat_markers_only_skips_frames_without_markers(
    recorded: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seg = _seg(recorded, "SOL-USD", "market_trades")
    archive = compact_segment(seg, today=TODAY, frame_target=16 << 10).archive
    with ArchiveReader.open(archive) as reader:
        frames = reader.data_frames
        holding = [f for f in frames if f.markers and f.markers.total]
    assert len(frames) > 5 and len(holding) == 1  # the two markers sit in the last frame
    code, out, err = run(capfd, "cat", str(archive), "--markers-only", "--all-markers",
                          "--io-stats")
    assert code == 0 and len(out.splitlines()) == 2
    read = int(err.split("; ")[1].split()[0])
    assert read == archive.stat().st_size - sum(f.compressed_size for f in frames) \
        + holding[0].compressed_size


def test_segment_scan_decodes_only_batches_with_markers(recorded: Path) -> None:
    """A batch whose payload is damaged but holds no marker is never read by the marker
    scan (it is not decoded); one holding a marker is CRC-checked and reported."""
    seg = _seg(recorded, "BTC-USD", "level2")
    with SegmentScan(seg) as scan:
        heads = list(scan.heads())
    plain = next(h for h in heads if not count_kinds(h.kinds).total)
    marked = next(h for h in heads if count_kinds(h.kinds).total)
    data = bytearray(seg.read_bytes())
    data[plain.offset + plain.length - 9] ^= 0x55  # a payload byte of a marker-free batch
    seg.write_bytes(bytes(data))
    with SegmentScan(seg) as scan:
        assert scan.marker_counts() == _expected(PLANS[("BTC-USD", "level2")])
        assert len(list(scan.records(frozenset({K.GAP, K.DISCONNECT})))) > 0
    data[marked.offset + marked.length - 9] ^= 0x55
    seg.write_bytes(bytes(data))
    with SegmentScan(seg) as scan, pytest.raises(ValueError, match="CRC32C"):
        list(scan.records(frozenset({K.GAP, K.DISCONNECT, K.RECONNECT, K.DROPPED})))


def test_ls_marks_unknown_counts_of_a_damaged_segment(
    recorded: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seg = _seg(recorded, "BTC-USD", "level2")
    with SegmentScan(seg) as scan:
        third = list(scan.heads())[2]
    data = bytearray(seg.read_bytes())
    data[third.offset:third.offset + 4] = b"XXXX"  # the batch magic
    seg.write_bytes(bytes(data))
    code, out, err = run(capfd, "ls", str(recorded))
    assert code == 1
    row = next(r for r in out.splitlines() if r.startswith("BTC-USD/level2"))
    assert row.split()[5:8] == ["?", "?", "?"]
    assert f"{seg}" in err and "bad batch magic" in err and "Traceback" not in err
    assert "'?' = not known for 1 file(s)" in out


def test_unknown_kinds_are_counted_as_other(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    batch = [(DAY_NS + i, k, b"{}") for i, k in enumerate([0, 1, 9, 200, 5, 0, 6, 2])]
    seg = write_segment(tmp_path, [batch])
    want = MarkerCounts(gap=1, disconnect=1, dropped=1, note=1, other=2)
    assert segment_marker_counts(seg) == want
    archive = compact_segment(seg, today=TODAY).archive
    with ArchiveReader.open(archive) as reader:
        assert reader.marker_counts == want
    code, out, _ = run(capfd, "ls", str(tmp_path), "--json")
    assert code == 0 and orjson.loads(out)["markers"]["other"] == 2
    code, out, _ = run(capfd, "cat", str(archive), "--markers-only", "--all-markers",
                      "--format", "jsonl")
    assert code == 0
    assert [orjson.loads(line)["kind"] for line in out.splitlines()] == [
        "gap", "kind9", "kind200", "dropped", "note", "disconnect"]


def _rewrite_table(archive: Path, version: int, markers_fn: object = None) -> None:
    """Rewrite an archive's seek table: as version 1 (no marker counts) or with counts
    changed by markers_fn(index, counts) — with a valid CRC, so only a count check sees it."""
    data = archive.read_bytes()
    fd = os.open(archive, os.O_RDONLY)
    try:
        table = read_table(CountingFile(fd, len(data)))
    finally:
        os.close(fd)
    if version == 2:
        from dataclasses import replace

        frames = [replace(f, markers=markers_fn(i, f.markers))  # type: ignore[operator]
                  for i, f in enumerate(table.frames)]
        new = encode_table(frames, table.dict_offset, table.dict_size)
    else:
        body = b"".join(ENTRY_V1.pack(f.compressed_offset, f.compressed_size,
                                      f.uncompressed_offset, f.uncompressed_size, f.min_ts_ns,
                                      f.max_ts_ns, f.record_count) for f in table.frames)
        head = TRAILER.pack(table.dict_offset, table.dict_size, len(table.frames),
                            ENTRY_V1.size, version, 0, TRAILER_MAGIC)
        crc = google_crc32c.value(body + head[:-12])
        trailer = TRAILER.pack(table.dict_offset, table.dict_size, len(table.frames),
                               ENTRY_V1.size, version, crc, TRAILER_MAGIC)
        new = SKIPPABLE_HEADER.pack(SKIPPABLE_TABLE_MAGIC, len(body) + len(trailer)) \
            + body + trailer
    archive.write_bytes(data[:table.table_offset] + new)


def test_verify_catches_wrong_marker_counts_in_the_seek_table(
    recorded: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    archive = compact_segment(_seg(recorded, "BTC-USD", "level2"), today=TODAY,
                              frame_target=16 << 10).archive
    assert run(capfd, "verify", str(archive))[0] == 0

    def one_more_gap(i: int, m: MarkerCounts) -> MarkerCounts:
        return m._replace(gap=m.gap + 1) if i == 2 else m

    _rewrite_table(archive, 2, one_more_gap)
    with ArchiveReader.open(archive) as reader:
        frame = reader.table.frames[2]
    code, out, _ = run(capfd, "verify", str(archive))
    assert code == 1
    assert f"{archive}@{frame.compressed_offset}: seek table marker counts" in out


def test_version_1_archives_are_still_read(
    recorded: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seg = _seg(recorded, "BTC-USD", "level2")
    with SegmentScan(seg) as scan:
        before = list(scan.records(frozenset(k.value for k in K)))
    archive = compact_segment(seg, today=TODAY, frame_target=16 << 10).archive
    _rewrite_table(archive, 1)
    with ArchiveReader.open(archive) as reader:
        assert reader.marker_counts is None
        assert list(reader.records()) == before
    code, out, err = run(capfd, "ls", str(archive))
    assert code == 0 and out.splitlines()[1].split()[5:8] == ["?", "?", "?"], err
    assert "'?' = not known for 1 file(s)" in out
    code, out, _ = run(capfd, "cat", str(archive), "--markers-only", "--all-markers",
                      "--format", "jsonl")
    assert len(out.splitlines()) == _expected(PLANS[("BTC-USD", "level2")]).total
    assert run(capfd, "verify", str(archive))[0] == 0


def test_unknown_archive_version_is_refused_clearly(
    recorded: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    archive = compact_segment(_seg(recorded, "ETH-USD", "ticker"), today=TODAY).archive
    data = bytearray(archive.read_bytes())
    struct.pack_into("<H", data, len(data) - TRAILER.size + 18, 4)  # the trailer's version
    # as a version-4 writer would: its table CRC is intact (a mismatch would be damage)
    _, _, count, entry_size, _, _, _ = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    body = data[len(data) - TRAILER.size - count * entry_size : len(data) - TRAILER.size]
    trailer_head = data[len(data) - TRAILER.size : len(data) - TRAILER.size + 20]
    struct.pack_into("<I", data, len(data) - TRAILER.size + 20,
                     google_crc32c.value(bytes(body) + bytes(trailer_head)))
    archive.write_bytes(bytes(data))
    with pytest.raises(CorruptArchive, match="unsupported archive version 4"):
        ArchiveReader.open(archive)
    code, out, err = run(capfd, "cat", str(archive))
    assert code == 1 and out == ""
    assert "unsupported archive version 4" in err and len(err.strip().splitlines()) == 1


@settings(max_examples=30, deadline=None)
@given(recs=st.lists(st.tuples(st.integers(0, 400), st.sampled_from([0, 0, 0, 1, 2, 5, 6])),
                     min_size=1, max_size=150),
       per_batch=st.integers(1, 12), target=st.sampled_from([1, 300, 1 << 20]),
       kinds=st.sets(st.sampled_from([0, 1, 2, 5, 6]), min_size=1),
       window=st.tuples(st.one_of(st.none(), st.integers(-5, 405)),
                        st.one_of(st.none(), st.integers(-5, 405))))
def test_kind_selection_equals_a_full_filter(
    tmp_path_factory: pytest.TempPathFactory, recs: list[tuple[int, int]], per_batch: int,
    target: int, kinds: set[int], window: tuple[int | None, int | None],
) -> None:
    """Skipping batches by their kinds column and frames by their seek-table counts never
    drops a record, whatever the time order, for a segment and its archive alike."""
    root = tmp_path_factory.mktemp("kinds")
    rows = [(DAY_NS + t * 1000, k, b'{"i":%d}' % i) for i, (t, k) in enumerate(recs)]
    batches = [rows[i:i + per_batch] for i in range(0, len(rows), per_batch)]
    seg = write_segment(root, batches)
    lo = None if window[0] is None else DAY_NS + window[0] * 1000
    hi = None if window[1] is None else DAY_NS + window[1] * 1000
    want = [r for r in rows if r[1] in kinds and (lo is None or r[0] >= lo)
            and (hi is None or r[0] < hi)]
    chosen = frozenset(kinds)
    with SegmentScan(seg) as scan:
        assert [(r.ts_ns, r.kind, r.payload) for r in scan.records(chosen, lo, hi)] == want
        assert scan.marker_counts() == count_kinds(bytes(k for _, k, _ in rows))
    archive = compact_segment(seg, today=TODAY, frame_target=target).archive
    with ArchiveReader.open(archive) as reader:
        assert [(r.ts_ns, r.kind, r.payload) for r in reader.records(lo, hi, chosen)] == want
        assert reader.marker_counts == count_kinds(bytes(k for _, k, _ in rows))


def test_read_batch_and_walk_agree_on_offsets(recorded: Path) -> None:
    """The header walk finds exactly the batches the CRC-checking reader finds."""
    seg = _seg(recorded, "BTC-USD", "level2")
    data = seg.read_bytes()
    with SegmentScan(seg) as scan:
        for head in scan.heads():
            info, _ = read_batch(data, head.offset, len(data))
            assert (info.length, info.count, info.first_ts_ns, info.last_ts_ns) == (
                head.length, head.records, head.first_ts_ns, head.last_ts_ns)

"""The tools explain themselves: provenance in `ls`, possible-loss markers by default, `-p`
with the `_multi` frames naming the product, whole table rows when piped, `tail` on a channel
folder, `--to` before `--from` and unmatched filters as one-line usage errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from segfiles import write_segment

from logger.daemon import claim_data_dir
from logger.provenance import Venue, release
from storage.archive import ArchiveReader
from storage.compact import compact_segment
from storage.markers import MarkerCounts
from storage.records import RecordKind as K
from tools.inspect_cli import main

DAY = dt.date(2025, 12, 1)
T0 = 1_764_547_200 * 10**9  # 2025-12-01T00:00:00Z
VENUE = Venue("advanced_trade", "ws://127.0.0.1:5555", "http://127.0.0.1:5555/products")
LONG = b'{"channel":"ticker","note":"' + b"x" * 600 + b'"}'


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A recorded root: markers of every kind in BTC-USD/ticker, a _multi stream whose frames
    name BTC-USD or ETH-USD, and the recorder's provenance file."""
    r = tmp_path / "data"
    claim_data_dir(r, VENUE)
    kinds = [K.DATA, K.GAP, K.DATA, K.DISCONNECT, K.RECONNECT, K.SUBSCRIBE, K.DATA, K.DROPPED,
             K.NOTE, K.RESTART, 9, K.DATA, K.STOP]  # 9: a kind this version does not know
    btc = [(T0 + i * 1000, int(kind), LONG if i == 0 else b'{"event":"%d"}' % i)
           for i, kind in enumerate(kinds)]
    write_segment(r, [btc[:5], btc[5:]], product="BTC-USD", channel="ticker", day=DAY)
    write_segment(r, [[(T0 + 5, 0, b'{"product_id":"ETH-USD"}')]], product="ETH-USD",
                  channel="ticker", day=DAY)
    write_segment(r, [[
        (T0 + 7, 0, b'{"tickers":[{"product_id":"BTC-USD"},{"product_id":"X"}]}'),
        (T0 + 8, 0, b'{"tickers":[{"product_id":"ETH-USD"}]}'),
        (T0 + 9, int(K.GAP), b'{"event":"gap","scope":"connection"}')]],
        product="_multi", channel="ticker", day=DAY)
    release(r)
    return r


def test_ls_shows_provenance_and_counts_a_clean_stop_apart(
    root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capfd, "ls", str(root))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"root {root.resolve()}: venue {VENUE.ws_url} (products from "
                        f"{VENUE.rest_url}), dialect advanced_trade")
    assert "version 0." in lines[1] and "host " in lines[1] and ": stopped 20" in lines[1]
    assert lines[2].strip() == "1 run(s) kept, 0 ended without a clean stop"
    row = next(line for line in lines if line.startswith("BTC-USD/ticker"))
    assert row.split()[5:8] == ["1", "1", "1"]  # GAP, DISC (the STOP is not one), DROP
    assert "1 restart, 1 subscribe, 1 note, 1 stop, 1 of unknown kinds" in lines[-2]
    # gap 2 (BTC-USD and _multi), disconnect, dropped, restart, kind 9: 6; the STOP is not
    assert lines[-1].startswith("possible loss: 6 marker(s)")
    code, out, _ = run(capfd, "ls", str(root / "BTC-USD"), "--json")
    first = orjson.loads(out.splitlines()[0])
    assert first["provenance"]["venue"]["ws_url"] == VENUE.ws_url
    assert first["provenance"]["runs"][0]["ws_url"] == VENUE.ws_url
    seg = orjson.loads(out.splitlines()[1])
    assert seg["markers"]["stop"] == 1 and seg["markers"]["restart"] == 1


def test_stop_and_restart_counts_survive_compaction(root: Path) -> None:
    seg = next((root / "BTC-USD" / "ticker").glob("*.seg"))
    archive = compact_segment(seg, today=dt.date(2025, 12, 2)).archive
    with ArchiveReader.open(archive) as reader:
        assert reader.marker_counts == MarkerCounts(
            gap=1, disconnect=1, reconnect=1, subscribe=1, dropped=1, note=1, restart=1,
            stop=1, other=1)


def test_markers_only_shows_possible_losses_unless_all_asked(
    root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capfd, "cat", str(root), "-p", "BTC-USD", "-c", "ticker",
                       "--markers-only", "--format", "jsonl")
    assert code == 0
    got = [(r["channel"], r["product"], r["kind"]) for r in map(orjson.loads, out.splitlines())]
    assert [k for _, p, k in got if p == "BTC-USD"] == [
        "gap", "disconnect", "dropped", "restart", "kind9"]
    assert ("ticker", "_multi", "gap") in got  # a connection gap covers BTC-USD too
    code, out, _ = run(capfd, "cat", str(root / "BTC-USD"), "--markers-only", "--all-markers",
                       "--format", "jsonl")
    assert [orjson.loads(line)["kind"] for line in out.splitlines()] == [
        "gap", "disconnect", "reconnect", "subscribe", "dropped", "note", "restart", "kind9",
        "stop"]
    code, _, err = run(capfd, "cat", str(root), "--all-markers")
    assert code == 2 and err.count("\n") == 1 and "--all-markers goes with --markers-only" in err


def test_product_filter_includes_multi_frames_naming_it(
    root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capfd, "cat", str(root), "-p", "BTC-USD", "--kind", "data",
                       "--format", "jsonl")
    assert code == 0
    rows = [orjson.loads(line) for line in out.splitlines()]
    multi = [r for r in rows if r["product"] == "_multi"]
    assert [r["msg"]["tickers"][0]["product_id"] for r in multi] == ["BTC-USD"]
    assert {r["product"] for r in rows} == {"BTC-USD", "_multi"}
    code, out, _ = run(capfd, "cat", str(root), "-p", "ETH-USD", "--format", "jsonl")
    ids = [orjson.loads(line)["msg"].get("tickers", [{}])[0].get("product_id")
           for line in out.splitlines() if orjson.loads(line)["kind"] == "data"]
    assert ids == [None, "ETH-USD"]  # its own message, then the _multi frame naming it


def test_table_rows_are_whole_when_piped(root: Path, capfd: pytest.CaptureFixture[str]
                                         ) -> None:
    code, out, _ = run(capfd, "cat", str(root / "BTC-USD"), "--format", "table")
    assert code == 0
    assert LONG.decode() in out and "…" not in out


def test_tail_takes_a_channel_folder(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capfd, "tail", str(root / "BTC-USD" / "ticker"), "-n", "2",
                         "--format", "jsonl")
    assert code == 0, err
    assert [orjson.loads(line)["kind"] for line in out.splitlines()] == ["data", "stop"]
    code, _, err = run(capfd, "tail", str(root), "-n", "2")
    assert code == 2 and "not a channel folder" in err and err.count("\n") == 1


@pytest.mark.parametrize("cmd", ["cat", "stats"])
def test_to_before_from_is_a_usage_error(cmd: str, root: Path,
                                         capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capfd, cmd, str(root), "--from", "2025-12-01T10:00Z",
                         "--to", "2025-12-01T09:00Z")
    assert code == 2 and out == ""
    assert err == ("cbl-inspect: --to (2025-12-01T09:00:00.000000000Z) is not after --from "
                   "(2025-12-01T10:00:00.000000000Z)\n")


@pytest.mark.parametrize("cmd", ["ls", "cat", "verify", "stats"])
def test_a_filter_matching_nothing_says_so(cmd: str, root: Path,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capfd, cmd, str(root), "-p", "NOPE-USD")
    assert code == 2 and out == ""
    assert err == f"cbl-inspect: {root}: no stream matches NOPE-USD/*\n"
    empty = root.parent / "empty"
    empty.mkdir()
    code, _, err = run(capfd, cmd, str(empty), "-p", "NOPE-USD")
    assert code == 2 and err == f"cbl-inspect: {empty}: no segment files found\n"


def test_verify_names_the_path_once_in_words(tmp_path: Path,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "data" / "BTC-USD" / "ticker"
    folder.mkdir(parents=True)
    (folder / "2025-12-01.0000.seg").write_bytes(b"")
    (folder / "2025-12-01.0001.seg").write_bytes(b"\x01" * 5000)
    (folder / "2025-12-01.0002.seg.zst").write_bytes(b"abc")
    code, out, err = run(capfd, "verify", str(tmp_path / "data"))
    assert code == 1
    lines = out.splitlines()
    assert lines == [
        f"{folder}/2025-12-01.0000.seg: empty file (0 bytes), not a segment or archive",
        f"{folder}/2025-12-01.0001.seg: not a coinbase-logger segment (bad magic)",
        f"{folder}/2025-12-01.0002.seg.zst@0: too short to be an archive (3 bytes)",
    ]
    assert "Errno" not in out + err


def test_an_unreadable_file_is_said_in_words(tmp_path: Path) -> None:
    import errno

    from storage.archive_verify import _cannot_open

    path = tmp_path / "x.seg"
    path.write_bytes(b"x")
    p = _cannot_open(path, PermissionError(errno.EACCES, "Permission denied", str(path)))
    assert str(p) == f"{path}: cannot read it: permission denied"


def _compact(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from tools.compact_cli import main as compact_main

    code = compact_main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def test_compact_refuses_a_folder_that_is_not_a_data_root(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _compact(capfd, str(tmp_path))
    assert code == 2 and out == ""
    assert err == (f"cbl-compact: {tmp_path}: not a data root (no .coinbase-logger.json and "
                   "no segment files under it); nothing to compact\n")
    code, _, err = _compact(capfd, str(tmp_path / "nope"))
    assert code == 2 and "no such file or directory" in err and err.count("\n") == 1
    fresh = tmp_path / "fresh"  # a root the recorder created but has not written to yet
    claim_data_dir(fresh, VENUE)
    code, _, err = _compact(capfd, str(fresh))
    assert code == 0 and "compacted 0 file(s)" in err


def test_compact_names_streams_and_says_what_is_not_due(
    root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    write_segment(root, [[(T0 + 86_400 * 10**9, 0, b"{}")]], product="BTC-USD",
                  channel="ticker", day=DAY + dt.timedelta(days=1))
    code, _, err = _compact(capfd, "--today", "2025-12-02", str(root))
    assert code == 0, err
    assert "compacted BTC-USD/ticker/2025-12-01.0000.seg" in err
    assert "compacted _multi/ticker/2025-12-01.0000.seg" in err
    assert err.splitlines()[-1].endswith(
        "; 1 not due yet (of 2025-12-02 UTC or later: still being written; a day is "
        "compacted once it is over and the recorder sealed it)")


@pytest.mark.parametrize("tool", ["inspect", "compact", "simulate"])
@pytest.mark.parametrize("args", [["--help"], ["ls", "data"]])
def test_a_tool_run_before_make_says_so_in_one_line(tool: str, args: list[str],
                                                    tmp_path: Path) -> None:
    """A fresh clone without .venv, and a python3 without the dependencies."""
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    clone = tmp_path / "clone"
    (clone / "tools").mkdir(parents=True)
    shutil.copy2(repo / "tools" / tool, clone / "tools" / tool)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bare = bin_dir / "python3"  # no site-packages: none of the dependencies importable
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")
    bare.chmod(0o755)
    done = subprocess.run([str(clone / "tools" / tool), *args], capture_output=True,
                          text=True, timeout=60, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"cbl-{tool}: not set up yet: run `make` (or `make venv`) in "
                           f"{clone} first\n")


def _table_as(archive: Path, version: int, counts: Any) -> None:
    """Rewrite the archive's seek table with entries of `version` and `counts(frame)`."""
    import os

    import google_crc32c

    from storage.archive_format import (
        ENTRY,
        ENTRY_V2,
        SKIPPABLE_HEADER,
        SKIPPABLE_TABLE_MAGIC,
        TRAILER,
        TRAILER_MAGIC,
        CountingFile,
        read_table,
    )

    data = archive.read_bytes()
    fd = os.open(archive, os.O_RDONLY)
    try:
        table = read_table(CountingFile(fd, len(data)))
    finally:
        os.close(fd)
    entry = ENTRY_V2 if version == 2 else ENTRY
    body = b"".join(entry.pack(f.compressed_offset, f.compressed_size, f.uncompressed_offset,
                               f.uncompressed_size, f.min_ts_ns, f.max_ts_ns, f.record_count,
                               *counts(f.markers)) for f in table.frames)
    head = TRAILER.pack(table.dict_offset, table.dict_size, len(table.frames), entry.size,
                        version, 0, TRAILER_MAGIC)
    crc = google_crc32c.value(body + head[:-12])
    trailer = TRAILER.pack(table.dict_offset, table.dict_size, len(table.frames), entry.size,
                           version, crc, TRAILER_MAGIC)
    new = SKIPPABLE_HEADER.pack(SKIPPABLE_TABLE_MAGIC, len(body) + len(trailer)) + body + trailer
    archive.write_bytes(data[:table.table_offset] + new)


def test_version_2_archives_still_read_and_bad_v3_counts_are_damage(root: Path) -> None:

    seg = next((root / "BTC-USD" / "ticker").glob("*.seg"))
    archive = compact_segment(seg, today=dt.date(2025, 12, 2)).archive
    # version 2: kinds 7..255 in one count (what a v2 writer would have written)
    _table_as(archive, 2, lambda m: (*m[:6], m.restart + m.stop + m.other))
    with ArchiveReader.open(archive) as reader:
        assert reader.marker_counts == MarkerCounts(
            gap=1, disconnect=1, reconnect=1, subscribe=1, dropped=1, note=1, other=3)
        assert reader.marker_counts.possible_loss == 6  # unknown to v2: counted as possible
    # version 3 claiming more RESTART/STOP than kinds 7..255 hold: damage, said in one line;
    # damage stays local (issue 11): the table is not trusted, the frames are walked and read
    _table_as(archive, 3, lambda m: (*m[:6], 0, 1, 1))
    with ArchiveReader.open(archive) as reader:
        assert [d for d in reader.damage if "more RESTART and STOP markers" in d.reason]
        assert reader.marker_counts is None  # counts of an untrusted table are not given
        assert len(list(reader.records())) == 13  # every record of the segment

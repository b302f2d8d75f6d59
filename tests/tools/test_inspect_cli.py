"""cbl-inspect on real segment files and archives: output, exit codes, bad input, pipes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from segfiles import DAY, DAY_NS, append_batches, make_batches, write_segment

from storage.archive import ArchiveReader
from storage.compact import compact_segment
from tools.inspect_cli import build_parser, main

TODAY = DAY + dt.timedelta(days=1)
REPO = Path(__file__).resolve().parents[2]
INSPECT = str(REPO / "tools" / "inspect")


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root with an archived day, a live segment and a second stream."""
    r = tmp_path / "data"
    write_segment(r, make_batches(3000, 250, markers_every=1000))
    compact_segment(r / "BTC-USD/level2/2026-11-20.0000.seg", today=TODAY, frame_target=64 << 10)
    later = DAY_NS + 3_600_000_000_000 + 3_000_000_000
    write_segment(r, make_batches(40, 20, start_ns=later), number=1, sealed=False)
    write_segment(r, make_batches(30, 10, start_ns=DAY_NS - 2 * 86_400_000_000_000),
                  product="ETH-USD", channel="ticker", day=DAY - dt.timedelta(days=2))
    write_segment(r, make_batches(30, 10), product="ETH-USD", channel="ticker")
    return r


def test_cat_raw_is_the_original_bytes_and_markers_go_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    batches = make_batches(2000, 200, markers_every=500)
    seg = write_segment(tmp_path, batches)
    code, seg_out, seg_err = run(capfd, "cat", str(seg))
    assert code == 0
    data = [p for b in batches for _, k, p in b if k == 0]
    assert seg_out.encode() == b"".join(p + b"\n" for p in data)
    assert seg_err.count("# GAP ") == 4 and "BTC-USD/level2" in seg_err
    archive = compact_segment(seg, today=TODAY).archive
    code, arch_out, arch_err = run(capfd, "cat", str(archive))
    assert (code, arch_out, arch_err) == (0, seg_out, seg_err)


def test_cat_jsonl_wraps_each_record(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capfd, "cat", str(root), "-p", "BTC-USD", "-c", "level2",
                       "--format", "jsonl")
    assert code == 0
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert len(lines) == 3040
    kinds = {line["kind"] for line in lines}
    assert kinds == {"data", "gap"}
    first = lines[0]
    assert first["product"] == "BTC-USD" and first["channel"] == "level2"
    assert first["ts"].endswith("Z") and first["msg"]["channel"] == "l2_data"
    gap = next(line for line in lines if line["kind"] == "gap")
    assert gap["msg"] == {"reason": "sequence", "missed": 3}


def test_cat_non_json_payload_is_kept_exactly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seg = write_segment(tmp_path, [[(DAY_NS + 5, 0, b"not json \xff\x00")]])
    code, out, _ = run(capfd, "cat", str(seg), "--format", "jsonl")
    assert code == 0
    import base64

    assert base64.b64decode(orjson.loads(out)["raw_b64"]) == b"not json \xff\x00"


def test_cat_from_to_selects_the_window(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    start = DAY_NS + 3_600_000_000_000
    frm, to = start + 1_000_000_000, start + 1_500_000_000  # records 1000..1499
    archive = root / "BTC-USD/level2/2026-11-20.0000.seg.zst"
    code, out, err = run(capfd, "cat", str(archive), "--format", "jsonl",
                         "--from", str(frm), "--to", str(to), "--io-stats")
    assert code == 0
    got = [orjson.loads(line)["ts_ns"] for line in out.splitlines()]
    assert got == [t for t in range(frm, to, 1_000_000)]
    read = int(err.split("; ")[1].split()[0])
    assert read < archive.stat().st_size  # the seek table, not a scan from the start
    # the same window through an ISO time and the whole root
    iso = dt.datetime.fromtimestamp(frm / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")
    code, out2, _ = run(capfd, "cat", str(root), "-c", "level2", "--format", "jsonl",
                        "--from", iso, "--to", str(to))
    assert [orjson.loads(line)["ts_ns"] for line in out2.splitlines()] == got


def test_cat_table_marks_markers(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capfd, "cat", str(root / "BTC-USD"), "--format", "table")
    assert code == 0
    assert ">>> GAP <<<" in out and "BTC-USD/level2" in out


def test_cat_merge_interleaves_streams_by_time(
    root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capfd, "cat", str(root), "--format", "jsonl", "--merge")
    assert code == 0
    ts = [orjson.loads(line)["ts_ns"] for line in out.splitlines()]
    assert ts == sorted(ts) and len(ts) == 3000 + 40 + 60


@pytest.mark.parametrize("damage", ["missing", "empty", "foreign", "truncated_seg",
                                    "truncated_table", "bad_time", "bad_name"])
def test_bad_input_is_one_line_and_nonzero(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], damage: str
) -> None:
    seg = write_segment(tmp_path, make_batches(500, 100))
    archive = compact_segment(write_segment(tmp_path, make_batches(500, 100), number=1),
                              today=TODAY).archive
    argv = ["cat", str(seg)]
    if damage == "missing":
        argv = ["cat", str(tmp_path / "nope.seg")]
    elif damage == "empty":
        seg.write_bytes(b"")
    elif damage == "foreign":
        seg.write_bytes(b"PK\x03\x04 a zip file, not a segment" * 200)
    elif damage == "truncated_seg":
        seg.write_bytes(seg.read_bytes()[:1000])
    elif damage == "truncated_table":
        archive.write_bytes(archive.read_bytes()[:-20])
        argv = ["cat", str(archive)]
    elif damage == "bad_time":
        argv = ["cat", str(seg), "--from", "yesterday-ish"]
    else:
        argv = ["cat", str(tmp_path), "--product", "../etc"]
    code, out, err = run(capfd, *argv)
    assert code != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if damage == "truncated_table":  # the frames are intact: all read, the damage said
        assert len(out.splitlines()) == 500 and "seek table damaged" in err
    else:
        assert out == ""
    if damage in ("missing", "bad_time", "bad_name"):
        assert code == 2


def test_closed_pipe_is_quiet(root: Path) -> None:
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{INSPECT} cat {root} --format jsonl | head -2"],
        capture_output=True, text=True, timeout=60)
    assert len(proc.stdout.splitlines()) == 2
    assert "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


def test_ls_lists_states_and_gaps(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capfd, "ls", str(root))
    assert code == 0
    assert "archived" in out and "live" in out and "sealed" in out
    assert "gap: ETH-USD/ticker no segment for 2026-11-19" in out
    code, out, _ = run(capfd, "ls", str(root), "--json")
    rows = [orjson.loads(line) for line in out.splitlines()]
    segs = [r for r in rows if "path" in r]
    assert {r["state"] for r in segs} == {"archived", "live", "sealed"}
    assert sum(r["records"] for r in segs) == 3000 + 40 + 60
    assert any(r.get("gap") for r in rows)


def test_verify_clean_then_each_damage_is_reported(
    root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert run(capfd, "verify", str(root))[0] == 0
    archive = root / "BTC-USD/level2/2026-11-20.0000.seg.zst"
    with ArchiveReader.open(archive) as reader:
        frame = reader.data_frames[0]
    pristine = archive.read_bytes()
    data = bytearray(pristine)
    data[frame.compressed_offset + frame.compressed_size // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    code, out, err = run(capfd, "verify", str(root))
    assert code == 1
    assert f"{archive}@{frame.compressed_offset}:" in out and "1 problem" in err
    archive.write_bytes(pristine[:-10])  # truncated seek table
    code, out, _ = run(capfd, "verify", str(archive))
    assert code == 1 and str(archive) in out
    archive.write_bytes(pristine)
    seg = root / "ETH-USD/ticker/2026-11-18.0000.seg"
    raw = bytearray(seg.read_bytes())
    raw[5000] ^= 0x20  # inside the first batch
    seg.write_bytes(bytes(raw))
    code, out, _ = run(capfd, "verify", str(root))
    assert code == 1 and f"{seg}@4096:" in out and "invalid batch" in out
    assert archive.read_bytes() == pristine  # verify never rewrites anything


def test_verify_usage_errors_exit_2(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert run(capfd, "verify", str(root / "missing"))[0] == 2
    assert run(capfd, "verify")[0] == 2
    assert run(capfd, "verify", str(root), "--bogus")[0] == 2


def test_stats_counts_types_sizes_and_trade_id_gaps(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    msgs = [b'{"type":"match","trade_id":%d,"product_id":"BTC-USD","price":"1","size":"2"}' % i
            for i in (10, 11, 12, 15, 16, 16)]
    msgs.append(b'{"type":"heartbeat","product_id":"BTC-USD","sequence":5}')
    batch = [(DAY_NS + i, 0, m) for i, m in enumerate(msgs)] + [(DAY_NS + 99, 1, b"{}")]
    write_segment(tmp_path, [batch], channel="matches")
    code, out, _ = run(capfd, "stats", str(tmp_path), "--json")
    assert code == 0
    s = orjson.loads(out)
    assert s["types"] == {"match": 6, "heartbeat": 1}
    assert s["markers"] == {"gap": 1}
    assert s["trade_id_gaps"]["BTC-USD"] == {"gaps": 1, "missing": 2, "backwards": 1}
    assert s["size"]["max"] == max(len(m) for m in msgs)
    code, out, _ = run(capfd, "stats", str(tmp_path))
    assert "trade ids BTC-USD: 1 gaps (2 missing)" in out


def test_tail_prints_the_last_records(root: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capfd, "tail", "-n", "3", "ETH-USD/ticker", "--root", str(root),
                       "--format", "jsonl")
    assert code == 0
    assert [orjson.loads(line)["ts_ns"] for line in out.splitlines()] == [
        DAY_NS + 3_600_000_000_000 + i * 1_000_000 for i in (27, 28, 29)]
    code, out, _ = run(capfd, "tail", "-n", "100", "ETH-USD/ticker", "--root", str(root),
                       "--format", "jsonl")
    assert code == 0 and len(out.splitlines()) == 30  # fewer records than asked: all of them
    archive = root / "BTC-USD/level2/2026-11-20.0000.seg.zst"
    code, out, _ = run(capfd, "tail", "-n", "2", str(archive), "--format", "jsonl")
    assert code == 0
    assert [orjson.loads(line)["kind"] for line in out.splitlines()] == ["data", "gap"]


def test_tail_follow_across_rotation(tmp_path: Path) -> None:
    root = tmp_path / "data"
    start = DAY_NS + 3_600_000_000_000
    live = write_segment(root, make_batches(5, 5, start_ns=start), sealed=False)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.inspect_cli", "tail", "-f", "-n", "2", "BTC-USD/level2",
         "--root", str(root), "--format", "jsonl", "--poll", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        seen: list[int] = []

        def read(n: int) -> None:
            deadline = time.monotonic() + 20
            while len(seen) < n and time.monotonic() < deadline:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    break
                seen.append(orjson.loads(line)["ts_ns"])

        read(2)
        append_batches(live, make_batches(3, 3, start_ns=start + 5_000_000))
        read(5)
        # the writer seals the segment and rotates to the next one
        append_batches(live, make_batches(1, 1, start_ns=start + 8_000_000), seal=True)
        nxt = write_segment(root, make_batches(2, 2, start_ns=start + 9_000_000), number=1,
                            sealed=False)
        read(8)
        append_batches(nxt, make_batches(2, 2, start_ns=start + 11_000_000))
        read(10)
        assert seen == [start + i * 1_000_000 for i in range(3, 13)]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_help_reads_like_a_manual(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capfd, "--help")
    assert code == 0 and "exit status" in out and "examples" in out
    for cmd in ("ls", "cat", "tail", "verify", "stats"):
        code, out, _ = run(capfd, cmd, "--help")
        assert code == 0 and "usage: cbl-inspect " + cmd in out and "examples:" in out
        # each example is a command of this tool that its parser accepts
        examples = out.split("examples:\n", 1)[1].splitlines()
        for line in (e.strip() for e in examples):
            if line.startswith("cbl-inspect "):
                argv = line.split("|")[0].split("#")[0].split(">")[0].split("&&")[0].split()
                build_parser().parse_args(argv[1:])


def test_verify_reports_records_outside_their_day(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seg = write_segment(tmp_path, make_batches(10, 10), day=DAY - dt.timedelta(days=1))
    code, out, _ = run(capfd, "verify", str(seg))
    assert code == 1 and "outside the segment's day 2026-11-19" in out


def test_ls_reports_an_unreadable_file_and_goes_on(
    root: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = root / "ETH-USD/ticker/2026-11-20.0000.seg"
    bad.write_bytes(b"")
    code, out, err = run(capfd, "ls", str(root))
    assert code == 1
    assert "error" in out and "archived" in out  # the other files are still listed
    assert str(bad) in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["tail", "not-a-stream"], ["tail", "BTC-USD/../x"],
                                  ["tail", "-n", "-1", "BTC-USD/level2"],
                                  ["tail", "NOPE-USD/level2"], ["ls", "/no/such/root"]])
def test_tail_and_ls_usage_errors(
    root: Path, capfd: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capfd, *argv, *(["--root", str(root)] if argv[0] == "tail" else []))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err


def test_jsonl_keeps_one_record_per_line_for_pretty_printed_json(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pretty = b'{\n  "type": "ticker",\r\n  "price": "1.10"\n}'
    seg = write_segment(tmp_path, [[(DAY_NS + 1, 0, pretty)]])
    code, out, _ = run(capfd, "cat", str(seg), "--format", "jsonl")
    assert code == 0 and len(out.splitlines()) == 1
    assert orjson.loads(out)["msg"] == {"type": "ticker", "price": "1.10"}


def test_tail_follow_moves_on_from_an_abandoned_unsealed_segment(tmp_path: Path) -> None:
    """After a recorder restart into a newer segment, the old one may stay unsealed: tail -f
    must not wait on it forever."""
    root = tmp_path / "data"
    start = DAY_NS + 3_600_000_000_000
    write_segment(root, make_batches(3, 3, start_ns=start), sealed=False)
    child = ("import sys, tools.inspect_cat_cli as c; c.ABANDON_AFTER_S = 0.3; "
             "from tools.inspect_cli import main; sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", child, "tail", "-f", "-n", "5", "BTC-USD/level2", "--root",
         str(root), "--format", "jsonl", "--poll", "0.05"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        seen = [orjson.loads(proc.stdout.readline())["ts_ns"] for _ in range(3)]
        write_segment(root, make_batches(2, 2, start_ns=start + 3_000_000), number=1,
                      sealed=False)
        seen += [orjson.loads(proc.stdout.readline())["ts_ns"] for _ in range(2)]
        assert seen == [start + i * 1_000_000 for i in range(5)]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert b"is not sealed but a newer segment exists; moving on" in err


@pytest.mark.parametrize("archived", [False, True])
def test_verify_time_going_back_is_a_warning_unless_strict(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], archived: bool
) -> None:
    """A host clock step makes receive times jump back between batches: the data is intact,
    so verify warns (exit 0); --strict makes it a failure."""
    start = DAY_NS + 3_600_000_000_000
    first = make_batches(100, 50, start_ns=start)
    stepped = make_batches(100, 50, start_ns=start - 2_000_000_000)  # the clock stepped back 2 s
    path = write_segment(tmp_path, first + stepped)
    if archived:
        path = compact_segment(path, today=TODAY, frame_target=8 << 10).archive
    code, out, err = run(capfd, "verify", str(path))
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 1 and f"{path}@" in lines[0]
    assert "warning: time goes back 2099.000 ms" in lines[0]
    assert "clean; 1 warning(s) in 1 file(s)" in err
    code, out, err = run(capfd, "verify", "--strict", str(path))
    assert code == 1 and "warning: time goes back" in out and "--strict" in err
    # a real problem next to the warning still fails without --strict
    if not archived:
        raw = bytearray(path.read_bytes())
        raw[-20] ^= 0x01  # a payload byte of the last batch
        path.write_bytes(bytes(raw))
        code, out, err = run(capfd, "verify", str(path))
        assert code == 1 and "invalid batch" in out and "1 problem(s)" in err


def test_no_arguments_prints_usage_and_exits_2(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capfd)
    assert code == 2 and out == ""
    assert err.startswith("usage: cbl-inspect") and "ls, cat, tail, verify, stats" in err
    proc = subprocess.run([INSPECT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: cbl-inspect")

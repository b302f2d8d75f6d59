"""Damage and symlinks through the tools: commands over many files go on past a bad one and
exit 1 with a summary; compact never archives or deletes a damaged source (--salvage archives
what is readable, marks the losses and quarantines the original); nothing is written or
removed through a symbolic link, by the engine or by compact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from segfiles import DAY, DAY_NS, all_records, make_batches, write_segment

from storage import Engine, EngineConfig
from storage.archive import ArchiveReader
from storage.archive_verify import verify_file
from storage.layout import QUARANTINE_DIR
from storage.reader import SegmentReader
from storage.records import RecordKind
from tools.compact_cli import main as compact_main
from tools.inspect_cli import main as inspect_main

TODAY = "2026-11-21"


def _run(capfd: pytest.CaptureFixture[str], fn: object, *argv: str) -> tuple[int, str, str]:
    code = fn(list(argv))  # type: ignore[operator]
    out, err = capfd.readouterr()
    return code, out, err


def _damage_middle_batch(path: Path) -> tuple[int, int]:
    with SegmentReader.open(path) as r:
        batches = list(r.batches())
    victim = batches[len(batches) // 2]
    raw = bytearray(path.read_bytes())
    raw[victim.offset + victim.length - 20] ^= 0x08
    path.write_bytes(bytes(raw))
    return victim.offset, victim.count


def test_cat_and_stats_go_on_past_damage_and_bad_files(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    a = write_segment(tmp_path, make_batches(1000, 100), product="AAA-USD")
    b = write_segment(tmp_path, make_batches(1000, 100), product="BBB-USD")
    c = write_segment(tmp_path, make_batches(1000, 100), product="CCC-USD")
    a.write_bytes(os.urandom(6000))  # unreadable: skipped, said
    off, lost = _damage_middle_batch(b)
    code, out, err = _run(capfd, inspect_main, "cat", str(tmp_path), "--format", "jsonl")
    assert code == 1
    assert len(out.splitlines()) == 1000 - lost + 1000  # b's other batches and all of c
    assert f"{b}@{off}:" in err and f"~{lost} records lost" in err
    assert f"skipped: {a}" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("cbl-inspect: 1 damaged range(s)")
    code, out, err = _run(capfd, inspect_main, "stats", str(tmp_path))
    assert code == 1 and "CCC-USD/level2: 1000 messages" in out and f"{b}@{off}" in err
    assert c.exists()


def test_compact_skips_a_damaged_source_and_keeps_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seg = write_segment(tmp_path, make_batches(1000, 100))
    good = write_segment(tmp_path, make_batches(1000, 100), channel="ticker")
    _damage_middle_batch(seg)
    before = seg.read_bytes()
    code, _, err = _run(capfd, compact_main, "--today", TODAY, str(tmp_path))
    assert code == 1 and f"FAILED {seg}" in err and "invalid batch" in err
    assert seg.read_bytes() == before and not seg.with_name(seg.name + ".zst").exists()
    assert not good.exists() and good.with_name(good.name + ".zst").exists()  # others done


def test_compact_salvage_archives_what_is_readable_and_quarantines_the_original(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    batches = make_batches(1000, 100)
    seg = write_segment(tmp_path, batches)
    before = seg.read_bytes()
    off, lost = _damage_middle_batch(seg)
    damaged = seg.read_bytes()
    code, _, err = _run(capfd, compact_main, "--today", TODAY, "--salvage", str(tmp_path))
    assert code == 1 and f"SALVAGED {seg}" in err
    archive = seg.with_name(seg.name + ".zst")
    moved = tmp_path / QUARANTINE_DIR / "BTC-USD" / "level2" / seg.name
    assert not seg.exists() and moved.read_bytes() == damaged != before
    assert verify_file(archive).problems == ()
    with ArchiveReader.open(archive) as r:
        recs = list(r.records())
    data = [(x.ts_ns, x.kind, x.payload) for x in recs if x.kind != RecordKind.GAP]
    expected = [x for x in all_records(batches)]
    assert set(data) <= set(expected) and len(data) == len(expected) - lost
    [gap] = [x for x in recs if x.kind == RecordKind.GAP]
    info = json.loads(gap.payload)
    assert info["offset"] == off and info["source"] == seg.name and info["records_lost_estimate"]
    # the marker sits where the hole was: between the records before and after it
    i = recs.index(gap)
    assert recs[i - 1].ts_ns <= gap.ts_ns <= recs[i + 1].ts_ns
    # the quarantine folder is not a stream: tools do not list it
    code, out, _ = _run(capfd, inspect_main, "ls", str(tmp_path))
    assert QUARANTINE_DIR not in out


def test_compact_refuses_symlinked_files_and_folders(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    target = write_segment(outside, make_batches(500, 100))
    link = root / "BTC-USD" / "level2" / target.name
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    (root / "ETH-USD").symlink_to(outside / "BTC-USD")  # a symlinked product folder
    before = target.read_bytes()
    code, _, err = _run(capfd, compact_main, "--today", TODAY, str(root))
    assert code == 1 and "symbolic link" in err
    assert target.read_bytes() == before and link.is_symlink()
    assert not list(outside.rglob("*.zst")) and not list(root.rglob("*.zst"))
    code, out, err = _run(capfd, inspect_main, "cat", str(root))
    assert (code == 1 and out == "") or "symbolic link" in err
    assert "symbolic link (never followed)" in err


def test_engine_never_writes_through_a_symlink(tmp_path: Path) -> None:
    """A past-day segment symlinked to a file outside the root, and a symlinked channel
    folder: the engine logs and skips them; the outside files are untouched."""
    root, outside = tmp_path / "data", tmp_path / "outside"
    outside.mkdir()
    past = write_segment(outside, make_batches(300, 100), sealed=False)  # unsealed: tempting
    past_bytes = past.read_bytes()
    link = root / "BTC-USD" / "level2" / past.name
    link.parent.mkdir(parents=True)
    link.symlink_to(past)
    (outside / "chan").mkdir()
    (root / "ETH-USD").mkdir()
    (root / "ETH-USD" / "level2").symlink_to(outside / "chan", target_is_directory=True)
    now = DAY_NS + 86_400 * 10**9 + 3600 * 10**9  # the day after DAY
    with Engine(EngineConfig(root=root, backend="mmap")) as eng:
        eng.append(eng.stream("BTC-USD", "level2"), DAY_NS + 5 * 3600 * 10**9, b"{}")
        eng.append(eng.stream("ETH-USD", "level2"), now, b"{}")
        eng.append(eng.stream("SOL-USD", "level2"), now, b"{}")
        result = eng.commit(now_ns=now)
        assert any("ETH-USD" in e.message for e in result.errors)
    assert past.read_bytes() == past_bytes  # neither appended to nor sealed nor truncated
    assert os.listdir(outside / "chan") == []
    assert list((root / "SOL-USD" / "level2").glob("*.seg"))  # other streams record
    assert sorted(p.name for p in (root / "BTC-USD" / "level2").iterdir()) == [
        past.name, f"{DAY}.0001.seg"]

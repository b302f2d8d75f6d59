"""cbl-compact end to end: what it picks, what it says, how it exits."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import zstandard
from segfiles import (
    DAY,
    all_records,
    archive_records,
    make_batches,
    message,
    write_segment,
)

import storage.compact
from tools.compact_cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def test_compacts_past_sealed_days_only(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    a = make_batches(3000, 300)
    old = write_segment(tmp_path, a, prealloc=4 << 20)
    older = write_segment(tmp_path, a, channel="ticker", day=DAY - dt.timedelta(days=3))
    unsealed = write_segment(tmp_path, a, number=1, sealed=False)
    today = write_segment(tmp_path, a, day=DAY + dt.timedelta(days=1))
    code, _, err = run(capfd, "--today", "2026-11-21", "-j", "2", str(tmp_path))
    assert code == 0, err
    for src in (old, older):
        archive = src.with_name(src.name + ".zst")
        assert not src.exists() and archive_records(archive) == all_records(a)
    assert unsealed.exists() and today.exists()
    assert "not sealed" in err
    assert "compacted 2 file(s)" in err and "ratio" in err and "MB/s" in err


def test_dry_run_and_quiet(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = write_segment(tmp_path, make_batches(100, 50))
    code, out, err = run(capfd, "--today", "2026-11-21", "--dry-run", str(tmp_path))
    assert code == 0 and f"would compact {src}" in out and src.exists()
    assert "dry run: 1 file(s)" in err
    code, out, err = run(capfd, "--today", "2026-11-21", "-q", str(src))
    assert code == 0 and not src.exists() and len(err.splitlines()) == 1


def test_a_failure_exits_1_and_keeps_the_source(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    good = write_segment(tmp_path, make_batches(500, 100))
    bad = write_segment(tmp_path, make_batches(500, 100), channel="ticker")
    raw = bytearray(bad.read_bytes())
    raw[-100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    code, _, err = run(capfd, "--today", "2026-11-21", str(tmp_path))
    assert code == 1
    assert f"FAILED {bad}" in err and "1 failed" in err
    assert bad.read_bytes() == bytes(raw) and not good.exists()


def test_dictionary_is_embedded(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "level2.dict"
    d.write_bytes(zstandard.train_dictionary(8192, [message(i) for i in range(2000)]).as_bytes())
    root = tmp_path / "data"
    batches = make_batches(1000, 100)
    src = write_segment(root, batches)
    code, _, err = run(capfd, "--today", "2026-11-21", "--dictionary", str(d), str(root))
    assert code == 0, err
    d.unlink()  # the archive must not need the file any more
    assert archive_records(src.with_name(src.name + ".zst")) == all_records(batches)


def test_ctrl_c_keeps_the_source_and_leaves_no_tmp(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_segment(tmp_path, make_batches(4000, 100))
    original = src.read_bytes()

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.compact, "verify_against_source", interrupted)
    code, _, err = run(capfd, "--today", "2026-11-21", str(tmp_path))
    assert code == 130 and "interrupted" in err
    assert [p.name for p in src.parent.iterdir()] == [src.name]
    assert src.read_bytes() == original


@pytest.mark.parametrize("argv", [["-l", "99"], ["-j", "0"], ["--today", "soon"],
                                  ["--dictionary", "/nonexistent/dict"], ["/no/such/root"]])
def test_usage_errors_exit_2(argv: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capfd, *argv)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_executable_wrapper_runs_from_a_checkout(tmp_path: Path) -> None:
    write_segment(tmp_path, make_batches(10, 10))
    proc = subprocess.run([str(REPO / "tools" / "compact"), "--today", "2026-11-21",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    help_ = subprocess.run([str(REPO / "tools" / "compact"), "--help"], capture_output=True,
                           text=True, timeout=60)
    assert help_.returncode == 0 and "exit status" in help_.stdout


def test_help_is_a_manual_whose_examples_parse(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capfd, "--help")
    assert code == 0
    for section in ("exit status:", "examples:", "scheduling:", "see also:"):
        assert section in out
    examples = out.split("examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(examples) >= 4
    for line in examples:
        argv = line.split("#")[0].split()
        assert argv[0] == "cbl-compact"
        build_parser().parse_args(argv[1:])

"""The no-silent-loss checker on small hand-made cases: a ledger written by the venue's
``Ledger`` and streams written by the real engine."""

from __future__ import annotations

import json
from pathlib import Path

from storage import Engine, EngineConfig, RecordKind
from tools.venue.coverage import check_coverage
from tools.venue.ledger import Ledger

NOON = 1_795_521_600_000_000_000


def _setup(tmp: Path, sent: dict[int, list[bytes]],
           stored: dict[str, list[tuple[RecordKind, bytes]]]) -> tuple[Path, Path]:
    led = Ledger(tmp / "ledger.jsonl")
    for conn, frames in sent.items():
        for i, data in enumerate(frames):
            led.frame(conn, i, "ticker", ["BTC-USD"], None, data)
    led.close()
    root = tmp / "data"
    eng = Engine(EngineConfig(root=root, backend="mmap", seal_stale_on_open=False))
    t = NOON
    for product, recs in stored.items():
        s = eng.stream(product, "ticker")
        for kind, payload in recs:
            t += 1
            eng.append(s, t, payload, kind)
    eng.close()
    return tmp / "ledger.jsonl", root


D = RecordKind.DATA


def test_a_missing_frame_is_covered_only_by_a_loss_marker_between_its_neighbours(
    tmp_path: Path,
) -> None:
    sent = {0: [b"a", b"b", b"c", b"d"]}
    ledger, root = _setup(tmp_path / "1", sent, {"P0": [(D, b"a"), (D, b"b"), (D, b"d")]})
    cov = check_coverage(ledger, root)
    assert (cov.sent, cov.stored, cov.missing, cov.covered) == (4, 3, 1, 0)
    gap = json.dumps({"event": "gap"}).encode()
    ledger, root = _setup(tmp_path / "2", sent, {
        "P0": [(D, b"a"), (D, b"b"), (RecordKind.GAP, gap), (D, b"d")]})
    assert check_coverage(ledger, root).covered == 1
    # a marker elsewhere in the stream does not count, nor a non-loss kind in the place
    ledger, root = _setup(tmp_path / "3", sent, {
        "P0": [(RecordKind.GAP, gap), (D, b"a"), (D, b"b"), (RecordKind.SUBSCRIBE, gap),
               (D, b"d")]})
    assert check_coverage(ledger, root).covered == 0


def test_a_lost_tail_is_covered_by_a_restart_before_the_next_connection(
    tmp_path: Path,
) -> None:
    sent = {0: [b"a", b"b", b"c"], 1: [b"x", b"y"]}
    restart = json.dumps({"reason": "unclean_shutdown"}).encode()
    ledger, root = _setup(tmp_path / "1", sent, {
        "P0": [(D, b"a"), (RecordKind.RESTART, restart), (D, b"x"), (D, b"y")]})
    cov = check_coverage(ledger, root)
    assert (cov.missing, cov.covered) == (2, 2)
    ledger, root = _setup(tmp_path / "2", sent, {
        "P0": [(D, b"a"), (D, b"x"), (RecordKind.RESTART, restart), (D, b"y")]})
    assert check_coverage(ledger, root).covered == 0  # the marker came after the hole


def test_identical_frames_of_two_connections_are_not_taken_from_each_other(
    tmp_path: Path,
) -> None:
    """Connection 0's copy of ``same`` is missing (no marker), connection 1's is stored in
    its own stream: the checker must not let connection 0 take that copy."""
    sent = {0: [b"a0", b"same", b"b0"], 1: [b"a1", b"same", b"b1"]}
    ledger, root = _setup(tmp_path, sent, {
        "P0": [(D, b"a0"), (D, b"b0")], "P1": [(D, b"a1"), (D, b"same"), (D, b"b1")]})
    # the two connections' streams differ only by product here: route by the stream stored
    cov = check_coverage(ledger, root)
    assert (cov.stored, cov.missing, cov.covered) == (5, 1, 0)
    assert [(f.conn, f.i) for f in cov.uncovered] == [(0, 1)]


def test_a_connection_whose_frames_were_all_lost_is_checked_in_every_stream_it_may_own(
    tmp_path: Path,
) -> None:
    """Per-connection streams (``_conn<id>/subscriptions``): connections 0 and 1 feed streams
    PA and PB, the next run's 2 and 3 feed PB and PA. Connection 1 lost every frame, so the
    ledger cannot say which sibling was its own: covered when one of them has a loss marker
    where its frames would be, uncovered when none has."""
    sent = {0: [b"a0", b"b0"], 1: [b"a1", b"b1"], 2: [b"a2"], 3: [b"a3"]}
    drop = json.dumps({"reason": "lost_at_shutdown"}).encode()
    ledger, root = _setup(tmp_path / "1", sent, {
        "PA": [(D, b"a0"), (D, b"b0"), (D, b"a3")], "PB": [(RecordKind.DROPPED, drop), (D, b"a2")]})
    cov = check_coverage(ledger, root)
    assert (cov.stored, cov.missing, cov.covered) == (4, 2, 2)
    ledger, root = _setup(tmp_path / "2", sent, {
        "PA": [(D, b"a0"), (D, b"b0"), (D, b"a3")], "PB": [(D, b"a2"), (RecordKind.DROPPED, drop)]})
    cov = check_coverage(ledger, root)
    assert (cov.missing, cov.covered) == (2, 0)  # the marker came after the hole
    ledger, root = _setup(tmp_path / "3", sent, {
        "PA": [(D, b"a0"), (D, b"b0"), (D, b"a3"), (RecordKind.GAP, drop)], "PB": [(D, b"a2")]})
    assert check_coverage(ledger, root).covered == 0  # a sibling's later gap is not its place

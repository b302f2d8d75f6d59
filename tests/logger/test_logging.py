"""Logs a machine can alert on: JSON fields are real keys with typed values, every possible
data loss at WARNING or above, routine events at INFO; a gap is logged once, and a clean stop
writes STOP markers (not DISCONNECT) only into streams that exist."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path

from runtime_support import markers
from test_connection import _run, _subscribed
from wsserver import Session, at_frame, frame

from logger.logfmt import JsonFormatter, fields_of
from storage import RecordKind

REPO = Path(__file__).resolve().parents[2]


def _json_line(template: str, *args: object, level: int = logging.WARNING) -> dict[str, object]:
    rec = logging.LogRecord("logger.x", level, __file__, 1, template, args, None)
    return dict(json.loads(JsonFormatter().format(rec)))


def test_json_fields_are_real_keys_with_their_types() -> None:
    line = _json_line("event=gap conn=%s missing=%d error=%r ids=%r seconds=%.2f ok=%s",
                      "w0-3", 12, "a b=c 'd'", ["BTC-USD", "ETH-USD"], 1.23456, True)
    assert line["level"] == "WARNING" and line["logger"] == "logger.x"
    assert line["event"] == "gap" and line["conn"] == "w0-3" and line["missing"] == 12
    assert line["error"] == "a b=c 'd'"  # one value, spaces and '=' included
    assert line["ids"] == ["BTC-USD", "ETH-USD"] and line["seconds"] == 1.23 and line["ok"] is True
    assert "msg" not in line  # nothing left over: no logfmt string to parse downstream


def test_json_keys_inside_values_and_prerendered_lines() -> None:
    line = _json_line("event=%s_unavailable port=%d", "metrics", 9464)
    del line["ts"]
    assert line == {"level": "WARNING", "logger": "logger.x", "event": "metrics_unavailable",
                    "port": 9464}
    status = _json_line("%s", "event=status conns=3 messages=120 max_age_s=1.5 rate=12/s")
    assert (status["event"], status["conns"], status["max_age_s"], status["rate"]) == (
        "status", 3, 1.5, "12/s")
    free = _json_line("sealed %s left unsealed by an earlier run", "/d/x.seg")
    assert free["msg"] == "sealed /d/x.seg left unsealed by an earlier run"
    assert "event" not in free
    reserved = _json_line("event=x level=%s", "deep")
    assert reserved["level"] == "WARNING" and reserved["level_"] == "deep"


def test_a_malformed_call_still_logs_a_line() -> None:
    rec = logging.LogRecord("logger.x", logging.ERROR, __file__, 1, "event=x n=%d %s", ("a",),
                            None)
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "ERROR" and "event=x" in out["msg"]
    assert fields_of(logging.LogRecord("l", 20, "", 1, {"k": 1}, None, None)) == (
        {}, "{'k': 1}")


LOSS_EVENTS = {
    "gap", "dropped", "drop_markers", "disconnected", "watchdog", "unclean_stop_detected",
    "storage_failed", "storage_thread_dead", "storage_thread_failed", "commit_error",
    "invalid_stream", "subscribe_given_up", "reconnect_requested", "worker_died",
    "worker_failed", "refused", "oversize_message", "route_error", "startup_incomplete",
    "metrics_unavailable", "data_dir_refused",
}
ROUTINE_EVENTS = {"starting", "metrics_listening", "stopping", "stopped", "connections_closed",
                  "storage_closed", "all_acknowledged", "products_refreshed", "cpu_pinned",
                  "subscribe_recovered", "worker_started"}
_CALL = re.compile(r"log\.(debug|info|warning|error|exception|critical)\(\s*\"event=(\w+)")
_RANK = {"debug": 10, "info": 20, "warning": 30, "error": 40, "exception": 40, "critical": 50}


def test_every_possible_loss_is_logged_at_warning_or_above() -> None:
    seen: dict[str, set[str]] = {}
    for path in (REPO / "logger").rglob("*.py"):
        for level, event in _CALL.findall(path.read_text()):
            seen.setdefault(event, set()).add(level)
    for event in LOSS_EVENTS & set(seen):
        assert all(_RANK[lv] >= 30 for lv in seen[event]), (event, seen[event])
    for event in ROUTINE_EVENTS:
        assert seen.get(event) and all(_RANK[lv] <= 20 for lv in seen[event]), event
    assert {"gap", "dropped", "disconnected", "unclean_stop_detected"} <= set(seen)


def test_gap_logged_once_as_warning_and_clean_stop_writes_stop_markers(tmp_path: Path) -> None:
    async def script(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        s.send(frame(at_frame(seq + 3)))  # two frames lost: a gap on every stream
        await s.drain()
        await asyncio.sleep(5)

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("logger.connection")
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.INFO)
    try:
        _conn, _, got = _run(tmp_path, [script], lambda c, srv: c.stats.messages >= 4)
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    gaps = [line for line in lines if line.get("event") == "gap"]
    assert len(gaps) == 1, gaps  # one line per gap, not one per stream marked
    assert gaps[0]["level"] == "WARNING" and gaps[0]["conn"] == "0"
    assert gaps[0]["missing"] == 2 and gaps[0]["scope"] == "connection"
    ticker = got[("BTC-USD", "ticker")]
    assert len(markers(ticker, RecordKind.GAP)) == 1
    assert markers(ticker, RecordKind.DISCONNECT) == []  # stopped on purpose: not a loss
    stops = [json.loads(p) for p in markers(ticker, RecordKind.STOP)]
    assert [(s["event"], s["reason"]) for s in stops] == [("stop", "shutdown")]
    # the _multi/ticker stream got a GAP (a multi-product frame may be among the lost ones),
    # but no stream that never held a record gets a file just for a STOP marker
    for key, records in got.items():
        assert any(kind != RecordKind.STOP for kind, _, _ in records), key


def test_clean_stop_creates_no_file_for_a_stop_marker(tmp_path: Path) -> None:
    async def script(s: Session) -> None:
        seq = await _subscribed(s)
        s.send(frame(at_frame(seq)))
        await s.drain()
        await asyncio.sleep(5)

    _conn, _, got = _run(tmp_path, [script], lambda c, srv: c.stats.messages >= 3)
    assert not (tmp_path / "_multi").exists()  # nothing multi-product arrived
    assert [p for p in got if p[0] == "_multi"] == []
    for key, records in got.items():
        kinds = [kind for kind, _, _ in records]
        assert RecordKind.DISCONNECT not in kinds, key
        assert kinds[-1] == RecordKind.STOP, key  # every stream that exists ends with STOP
        assert len(kinds) > 1, key  # ... and holds something besides it

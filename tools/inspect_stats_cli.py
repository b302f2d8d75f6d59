"""`inspect stats`: per stream, what kinds of messages, how many, how fast, how big, how gappy.

Knows just enough of the two Coinbase dialects to name a message type (Exchange `type`,
Advanced Trade `channel` + event `type`) and to follow trade ids, which are +1 per trade and
product on both: the one sequence that reveals a missed trade (Exchange `sequence` is shared
with the full channel and has gaps by design; AT `sequence_num` is per connection).
"""

from __future__ import annotations

import argparse
import sys
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from storage import RecordKind
from tools.console_cli import EXIT_OK, format_time
from tools.damage_cli import DamageReport
from tools.inspect_cat_cli import ReadTotals, check_window, kind_name, records_of, selected
from tools.select_cli import no_match


@dataclass
class TradeIds:
    """Per product: the last trade id seen, and the jumps over missing ids."""

    last: int | None = None
    gaps: int = 0
    missing: int = 0
    backwards: int = 0

    def see(self, tid: int) -> None:
        if self.last is not None:
            if tid > self.last + 1:
                self.gaps += 1
                self.missing += tid - self.last - 1
            elif tid <= self.last:
                self.backwards += 1
                return
        self.last = tid


@dataclass
class StreamStats:
    types: Counter[str] = field(default_factory=Counter)
    markers: Counter[str] = field(default_factory=Counter)
    sizes: array[int] = field(default_factory=lambda: array("I"))
    first_ns: int | None = None
    last_ns: int | None = None
    trades: dict[str, TradeIds] = field(default_factory=dict)

    def add(self, ts_ns: int, kind: int, payload: bytes) -> None:
        self.first_ns = ts_ns if self.first_ns is None else min(self.first_ns, ts_ns)
        self.last_ns = ts_ns if self.last_ns is None else max(self.last_ns, ts_ns)
        if kind != RecordKind.DATA:
            self.markers[kind_name(kind)] += 1
            return
        self.sizes.append(len(payload))
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.types["(not JSON)"] += 1
            return
        if not isinstance(msg, dict):
            self.types[f"({type(msg).__name__})"] += 1
            return
        self.types[message_type(msg)] += 1
        for product, tid in trade_ids(msg):
            self.trades.setdefault(product, TradeIds()).see(tid)


def message_type(msg: dict[str, Any]) -> str:
    if "type" in msg:
        return str(msg["type"])
    channel = str(msg.get("channel", "?"))
    events = msg.get("events")
    if isinstance(events, list) and events and isinstance(events[0], dict) \
            and "type" in events[0]:
        return f"{channel}/{events[0]['type']}"
    return channel


def _int(v: object) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return None


def trade_ids(msg: dict[str, Any]) -> list[tuple[str, int]]:
    """(product, trade_id) of the trades a message reports, oldest first."""
    out: list[tuple[str, int]] = []
    if msg.get("type") in ("match", "last_match"):
        tid = _int(msg.get("trade_id"))
        if tid is not None:
            out.append((str(msg.get("product_id")), tid))
    elif msg.get("channel") == "market_trades" and isinstance(msg.get("events"), list):
        for ev in msg["events"]:
            if not isinstance(ev, dict) or ev.get("type") != "update":
                continue  # a snapshot repeats history; it is not the live sequence
            for tr in ev.get("trades") or []:
                if isinstance(tr, dict):
                    tid = _int(tr.get("trade_id"))
                    if tid is not None:
                        out.append((str(tr.get("product_id")), tid))
    out.sort(key=lambda x: x[1])
    return out


def _pct(sorted_sizes: list[int], q: float) -> int:
    if not sorted_sizes:
        return 0
    return sorted_sizes[min(len(sorted_sizes) - 1, int(q * len(sorted_sizes)))]


def summary(st: StreamStats) -> dict[str, Any]:
    sizes = sorted(st.sizes)
    n = len(sizes)
    total = sum(sizes)
    span_s = ((st.last_ns or 0) - (st.first_ns or 0)) / 1e9
    return {
        "messages": n,
        "markers": dict(st.markers),
        "first": format_time(st.first_ns) if st.first_ns is not None else None,
        "last": format_time(st.last_ns) if st.last_ns is not None else None,
        "rate_per_s": round(n / span_s, 3) if span_s > 0 else None,
        "bytes": total,
        "size": {"mean": round(total / n, 1) if n else 0, "p50": _pct(sizes, 0.5),
                 "p99": _pct(sizes, 0.99), "max": sizes[-1] if sizes else 0},
        "types": dict(st.types.most_common()),
        "trade_id_gaps": {p: {"gaps": t.gaps, "missing": t.missing, "backwards": t.backwards}
                          for p, t in sorted(st.trades.items())},
    }


def cmd_stats(args: argparse.Namespace) -> int:
    check_window(args)
    report = DamageReport()
    refs = selected(args, report)
    if not refs:
        raise no_match(args.target, args.product, args.channel)
    streams: dict[tuple[str, str], StreamStats] = {}
    reads = ReadTotals()
    for ref in refs:
        for product, channel, rec in records_of(ref, args.from_ns, args.to_ns, reads, None,
                                                report):
            st = streams.get((product, channel))
            if st is None:
                st = streams[(product, channel)] = StreamStats()
            st.add(rec.ts_ns, rec.kind, rec.payload)
    out = sys.stdout
    for (product, channel), st in sorted(streams.items()):
        s = summary(st)
        if args.json:
            out.write(orjson.dumps({"product": product, "channel": channel, **s}).decode()
                      + "\n")
            continue
        markers = ", ".join(f"{k} {v}" for k, v in sorted(s["markers"].items())) or "none"
        rate = f"{s['rate_per_s']:.2f}/s" if s["rate_per_s"] is not None else "-"
        print(f"{product}/{channel}: {s['messages']} messages, {s['bytes']} bytes, {rate}, "
              f"{s['first']} .. {s['last']}", file=out)
        sz = s["size"]
        print(f"  size: mean {sz['mean']} B, p50 {sz['p50']}, p99 {sz['p99']}, "
              f"max {sz['max']}", file=out)
        print(f"  markers: {markers}", file=out)
        types = ", ".join(f"{k} {v}" for k, v in s["types"].items()) or "none"
        print(f"  types: {types}", file=out)
        for p, g in s["trade_id_gaps"].items():
            print(f"  trade ids {p}: {g['gaps']} gaps ({g['missing']} missing), "
                  f"{g['backwards']} repeated or backwards", file=out)
    out.flush()
    return report.finish(EXIT_OK)

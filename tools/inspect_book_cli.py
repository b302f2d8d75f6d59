"""`inspect book` and `inspect integrity`: the rebuilt L2 book at a time, and how whole it was.

Both use the export's rebuild (tools/normalize), so what they print is what the export writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from tools.console_cli import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, ToolError, format_time
from tools.normalize.integrity import integrity
from tools.normalize.replay import book_at
from tools.normalize.rows import ProductRows


def cmd_book(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise ToolError(f"{root}: no such data root", EXIT_USAGE)
    rows, snap = book_at(root, args.product, args.at, args.lookback_days)
    if snap is None:
        raise ToolError(f"{args.product}: no level2 snapshot within {args.lookback_days} days "
                        f"before {format_time(args.at)}: the book cannot be rebuilt")
    tr = rows.tracker
    bids, asks = tr.book.top(args.depth)
    why = rows.invalidated_by
    if args.json:
        doc: dict[str, Any] = {
            "product": args.product, "at": format_time(args.at),
            "snapshot": format_time(snap), "valid": tr.valid,
            "invalid_since": None if tr.valid or why is None else format_time(why[0]),
            "invalid_reason": None if tr.valid or why is None else why[1],
            "bids": [list(lv) for lv in bids], "asks": [list(lv) for lv in asks]}
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        _print_book(args, snap, rows, bids, asks)
    return EXIT_OK if tr.valid else EXIT_PROBLEMS


def _print_book(args: argparse.Namespace, snap: int, rows: ProductRows,
                bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
    tr = rows.tracker
    state = "valid" if tr.valid else "INVALID"
    if not tr.valid and rows.invalidated_by is not None:
        ts, name = rows.invalidated_by
        state += f" since {format_time(ts)} ({name}; no snapshot after it)"
    print(f"{args.product} at {format_time(args.at)}: book from the snapshot at "
          f"{format_time(snap)}, {state}")
    print(f"{'BID SIZE':>20} {'BID':>16} | {'ASK':<16} {'ASK SIZE':<20}")
    for i in range(max(len(bids), len(asks))):
        b = bids[i] if i < len(bids) else ("", "")
        a = asks[i] if i < len(asks) else ("", "")
        print(f"{b[1]:>20} {b[0]:>16} | {a[0]:<16} {a[1]:<20}")


_COLS = (("PRODUCT", "product", 14), ("DATE", "date", 10), ("SNAPS", "snapshots", 5),
         ("UPDATES", "updates", 9), ("GAPS", "gaps", 4), ("MARKERS", "markers", 7),
         ("CROSSED", "crossed_moments", 7), ("LOCKED", "locked_moments", 6),
         ("VALID%", "book_valid_pct", 7), ("TRADES", "trades", 8),
         ("ID-GAPS", "trade_id_gaps", 7), ("MISSING", "trades_missing", 7))


def _cell(rep: dict[str, Any], key: str) -> str:
    v = rep[key]
    if key == "markers":
        return str(sum(v.values()))
    return "-" if v is None else str(v)


def cmd_integrity(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise ToolError(f"{root}: no such data root", EXIT_USAGE)
    reports = integrity(root, [args.product] if args.product else None, args.first,
                        args.last, args.lookback_days)
    n = 0
    for rep in reports:
        if args.json:
            sys.stdout.write(orjson.dumps(rep).decode() + "\n")
        else:
            if n == 0:
                print(" ".join(f"{h:>{w}}" for h, _, w in _COLS))
            print(" ".join(f"{_cell(rep, k):>{w}}" for _, k, w in _COLS))
        n += 1
    if n == 0:
        raise ToolError(f"{root}: no level2 or trade data for the selection", EXIT_USAGE)
    return EXIT_OK

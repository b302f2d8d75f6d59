"""cbl-inspect: look into recorded data, live segments and zstd archives alike.

Sub-commands: ls, cat, tail, verify, stats. `cbl-inspect --help` and `cbl-inspect CMD --help`
are the manual; docs/TOOLS.md has the same text with more detail.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tools.console_cli import EXIT_USAGE, ArgumentParser, ToolError, iso_day, parse_time, run_tool
from tools.inspect_book_cli import cmd_book, cmd_integrity
from tools.inspect_cat_cli import FORMATS, cmd_cat, cmd_tail, parse_kinds
from tools.inspect_ls_cli import cmd_ls
from tools.inspect_stats_cli import cmd_stats
from tools.inspect_verify_cli import cmd_verify

_DESCRIPTION = """\
List, print, follow, check and summarise recorded Coinbase market data. Every
command reads live segments (.seg), sealed ones and compacted archives (.seg.zst)
the same way, and only ever reads: nothing under the data root is changed.

TARGET (and ROOT) is a segment file, a data root such as ./data, or a product or
channel folder inside one (data/BTC-USD, data/BTC-USD/level2). ls, cat, verify and
stats also read archives shipped to object storage: s3://BUCKET/PREFIX[/PRODUCT[/CHANNEL]]
or one archive object, fetched with range requests (credentials and endpoint from the
AWS environment; docs/OBJECT_STORAGE.md). Markers are the
records the recorder writes where a stream may be missing messages: gap,
disconnect, reconnect, subscribe, dropped (its own queue overflowed), note.
"""

_TIMES = """\
times (--from/--to):
  ISO 8601 such as 2026-11-24T10:00:00Z, 2026-11-24T10:00Z or
  "2026-11-24 10:00:00.5+01:00" (no zone = UTC), a date (2026-11-24 = midnight
  UTC), or an integer: epoch seconds (up to 12 digits) or nanoseconds.
  --from is inclusive, --to exclusive.
"""

_EXIT = """\
exit status:
  0    success
  1    verify found a problem, or a file could not be read
  2    usage error: bad option, missing path, nothing selected
  130  interrupted (Ctrl-C)
  141  the reader of the output went away (e.g. `| head`); nothing is printed
"""

_EPILOG = _TIMES + "\n" + _EXIT + """
examples:
  cbl-inspect ls data
  cbl-inspect cat data -p BTC-USD -c level2 --from 2026-11-24T10:00Z | jq .
  cbl-inspect cat data --markers-only --format table      # every gap, disconnect, ...
  cbl-inspect cat data/BTC-USD/level2/2026-11-24.0000.seg.zst --format table | head
  cbl-inspect tail -f BTC-USD/ticker --root data
  cbl-inspect verify data && echo clean
  cbl-inspect stats data -c market_trades

see also:
  cbl-compact --help; docs/TOOLS.md (manual), docs/FORMAT.md, docs/ARCHIVE_FORMAT.md
"""

_LS = """\
List every segment file under ROOT, one row each:

  STREAM    product/channel
  DAY, SEG  UTC day and segment number within the day
  STATE     live (being written), sealed, archived (.seg.zst) or error
  RECORDS   committed records, markers included
  GAP       GAP markers: the stream may be missing messages here
  DISC      DISCONNECT markers: the connection carrying the stream dropped
  DROP      DROPPED markers: the recorder itself had to drop messages
  DATA      committed bytes
  DISK      bytes the file takes on disk (an archive: its compressed size)
  FIRST     first and last record time (UTC)
  LAST

After each stream, lines starting with '  gap:' name missing days between its
first and last day and missing segment numbers within a day. The last line sums
everything up, including every marker kind. A '?' in a marker column means the
count is not known: the file is damaged (said on stderr, exit 1) or is an archive
written before the format kept marker counts.

ls stays quick on a big data root: an archive is described by its seek table,
a segment by its header and each batch's header and kinds column (payloads are
never read and CRCs not checked: that is what verify does).
"""

_LS_EPILOG = """\
examples:
  cbl-inspect ls data
  cbl-inspect ls data/BTC-USD                  # one product, every channel
  cbl-inspect ls data -c level2 --json | jq -c 'select(.markers.gap > 0) | .path'
"""

_CAT = """\
Print the records of TARGET in file order: one stream after another, or all
interleaved by time with --merge.

formats:
  raw    each message's original bytes, one per line (pipe into jq); markers go
         to stderr as '# KIND TIME PRODUCT/CHANNEL {json}' lines, so stdout stays
         pure venue JSON. When no data records are selected (--markers-only,
         --kind gap,...), the marker lines are the output and go to stdout.
  jsonl  one JSON object per record: ts, ts_ns, kind, product, channel, offset
         and msg (the message's own bytes; raw_b64 if it is not JSON)
  table  aligned columns for people; markers stand out as '>>> KIND <<<'

--from jumps to the time through a segment's time index or an archive's seek
table instead of reading from the start; --markers-only and --kind decode only
the batches (and, in archives, the zstd frames) that hold a selected record.
"""

_CAT_EPILOG = _TIMES + """
examples:
  cbl-inspect cat data -p BTC-USD -c level2 --from 2026-11-24T10:00Z --to 2026-11-24T10:05Z
  cbl-inspect cat data --markers-only --format table           # where data may be missing
  cbl-inspect cat data -p ETH-USD --kind gap,dropped --format jsonl | jq .msg
  cbl-inspect cat data --merge --format jsonl --from 2026-11-24T10:00Z | head
  cbl-inspect cat data/ETH-USD/ticker/2026-11-20.0000.seg.zst --io-stats > /dev/null
"""

_TAIL = """\
Print the last N records of a segment file, or of the newest segment of the
stream PRODUCT/CHANNEL under --root. With -f, keep printing records as the
recorder commits them, moving on to the next segment when it rotates (a new UTC
day, or a full segment); if the stream has no file yet, wait for one. If the
recorder restarted into a newer segment while the followed one stays unsealed
and silent for 10 s, say so on stderr and move on. Stop with Ctrl-C.
"""

_TAIL_EPILOG = """\
examples:
  cbl-inspect tail BTC-USD/level2 --root data -n 5 --format jsonl
  cbl-inspect tail -f BTC-USD/ticker --root data --format table
  cbl-inspect tail data/BTC-USD/ticker/2026-11-24.0000.seg
"""

_VERIFY = """\
Check every selected file and print each finding as one line on stdout,
'FILE@OFFSET: message' (the offset is in that file; for an archive, the offset of
the damaged zstd frame or of the seek table). Files are only read: damage is
reported, never repaired.

Checked: the segment header (magic, version, CRC); every batch's magic, length
and CRC32C up to the commit point; record counts and time bounds against the
header; records within the segment's UTC day. For archives also the trailer, the
seek table's CRC and layout, every zstd frame checksum, every batch in every
frame, and the table's per-frame record counts, marker counts and time bounds.

Time running backwards from one batch to the next is a warning, not a problem:
the records and CRCs are intact, the recorder's clock moved (e.g. an NTP step).
Warnings are printed ('FILE@OFFSET: warning: ...') but leave the exit status 0
unless --strict is given.

A summary line goes to stderr (-q drops it).

exit status: 0 clean (warnings allowed), 1 problems found (or warnings with
--strict), 2 usage error.
"""

_VERIFY_EPILOG = """\
examples:
  cbl-inspect verify data && echo clean
  cbl-inspect verify --strict data/BTC-USD/level2/2026-11-24.0000.seg.zst
  cbl-inspect verify -q data -c level2 | cut -d: -f1 | sort -u     # damaged files
"""

_STATS = """\
Summarise the selected records per stream: message count, bytes, rate (messages
per second over the first..last span), sizes (mean, p50, p99, max), markers by
kind, messages per type (Exchange 'type'; Advanced Trade 'channel/event type'),
and sequence gaps per product from trade ids (Exchange match/last_match,
Advanced Trade market_trades updates): gaps, missing ids, repeated or backwards
ids. Reads every selected record.
"""

_STATS_EPILOG = _TIMES + """
examples:
  cbl-inspect stats data -p BTC-USD
  cbl-inspect stats data -c market_trades --json | jq '.trade_id_gaps'
  cbl-inspect stats data --from 2026-11-24T10:00Z --to 2026-11-24T11:00Z
"""

_BOOK = """\
Print the L2 order book of one product as it was at time T: rebuilt from the
last level2 snapshot at or before T (searched up to --lookback-days back) and
every update received after it, up to and including T. The book is INVALID
when a marker (gap, disconnect, dropped, restart, ...) or a damaged stretch of
file lies between that snapshot and T: it is printed anyway, with the reason,
and the exit status is 1. Same rebuild as cbl-export's book_snapshot and quotes.
"""

_BOOK_EPILOG = """\
examples:
  cbl-inspect book data -p BTC-USD --at 2026-11-24T10:00:00Z
  cbl-inspect book data -p ETH-USD --at 2026-11-24T10:00Z --depth 5 --json | jq .asks
"""

_INTEGRITY = """\
Per product and UTC day: level2 snapshots and updates, GAP markers, all markers,
crossed (best bid above best ask) and locked (equal) moments of the valid book,
the share of time the rebuilt book was valid (a possible loss invalidates it
until the next snapshot), trades, trade-id gaps and missing trade ids (trade ids
are +1 per product on both dialects). A table, or one JSON object per line.
"""

_INTEGRITY_EPILOG = """\
examples:
  cbl-inspect integrity data
  cbl-inspect integrity data -p BTC-USD --from 2026-11-20 --json | jq .book_valid_pct
"""

_USAGE_HINT = """\
commands: ls, cat, tail, verify, stats, book, integrity
Try 'cbl-inspect --help' for the manual, or 'cbl-inspect COMMAND --help'.
"""


def _time(text: str) -> int:
    try:
        return parse_time(text)
    except ToolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _kinds(text: str) -> frozenset[int]:
    try:
        return parse_kinds(text)
    except ToolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_filters(p: argparse.ArgumentParser, times: bool = True) -> None:
    p.add_argument("-p", "--product", metavar="P", help="only this product (e.g. BTC-USD)")
    p.add_argument("-c", "--channel", metavar="C", help="only this channel (e.g. level2)")
    if times:
        p.add_argument("--from", dest="from_ns", type=_time, metavar="T",
                       help="records at or after T (inclusive); jumps there via the time "
                            "index or seek table instead of reading from the start")
        p.add_argument("--to", dest="to_ns", type=_time, metavar="T",
                       help="records strictly before T (exclusive)")


def build_parser() -> ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(prog="cbl-inspect", description=_DESCRIPTION, epilog=_EPILOG,
                            formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=ArgumentParser, title="commands",
                                description="run 'cbl-inspect COMMAND --help' for its manual")
    for add in (_add_ls, _add_cat, _add_tail, _add_verify, _add_stats):
        add(sub, fmt)
    _add_book_commands(sub, fmt)
    return parser


def _add_ls(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("ls", help="what is recorded: streams, days, segments, records, "
                                  "markers (gaps, disconnects, drops), sizes",
                       formatter_class=fmt, description=_LS, epilog=_LS_EPILOG)
    p.add_argument("root", nargs="?", default="data", metavar="ROOT",
                   help="data root, product or channel folder, or file (default: ./data)")
    _add_filters(p, times=False)
    p.add_argument("--json", action="store_true",
                   help="one JSON object per segment (with a 'markers' object counting "
                        "every kind) and one per structural gap")
    p.set_defaults(func=cmd_ls)


def _add_cat(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("cat", help="print records (raw, jsonl or table); --markers-only "
                                   "lists every gap",
                       formatter_class=fmt, description=_CAT, epilog=_CAT_EPILOG)
    p.add_argument("target", metavar="TARGET", help="segment file, data root or folder")
    _add_filters(p)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--markers-only", action="store_true",
                       help="only the markers that say data may be missing here (gap, "
                            "disconnect, dropped, restart, and kinds this version does not "
                            "know); with --all-markers every marker")
    p.add_argument("--all-markers", action="store_true",
                   help="with --markers-only: also reconnect, subscribe, note and stop "
                        "(a clean stop: not a loss)")
    which.add_argument("--kind", dest="kinds", type=_kinds, metavar="K[,K...]",
                       help="only records of these kinds: data, gap, disconnect, reconnect, "
                            "subscribe, dropped, note, restart, stop, or 'markers' (all but "
                            "data)")
    p.add_argument("--format", choices=FORMATS, default="raw",
                   help="raw (default), jsonl or table; see above")
    p.add_argument("--merge", action="store_true",
                   help="interleave several streams by time (default: one stream after "
                        "another)")
    p.add_argument("--io-stats", action="store_true", dest="show_io",
                   help="at the end, print to stderr how many records were printed and how "
                        "many bytes were read from archives (shows what --from and "
                        "--markers-only skip)")
    p.set_defaults(func=cmd_cat)


def _add_tail(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("tail", help="the last records of a stream; -f follows it while the "
                                    "recorder writes",
                       formatter_class=fmt, description=_TAIL, epilog=_TAIL_EPILOG)
    p.add_argument("target", metavar="PATH|PRODUCT/CHANNEL",
                   help="a segment file, or a stream under --root")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new records as they are committed")
    p.add_argument("-n", "--lines", type=int, default=10, metavar="N",
                   help="records to show first (default 10)")
    p.add_argument("--root", default="data", metavar="ROOT",
                   help="data root for PRODUCT/CHANNEL (default: ./data)")
    p.add_argument("--format", choices=FORMATS, default="raw",
                   help="raw (default), jsonl or table; as for cat")
    p.add_argument("--poll", type=float, default=0.2, metavar="S",
                   help="seconds between checks for new data with -f (default 0.2)")
    p.set_defaults(func=cmd_tail)


def _add_verify(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("verify", help="check headers, CRCs, seek tables and counts; exit 1 "
                                      "on damage",
                       formatter_class=fmt, description=_VERIFY, epilog=_VERIFY_EPILOG)
    p.add_argument("target", metavar="TARGET",
                   help="segment file, data root or folder")
    _add_filters(p, times=False)
    p.add_argument("--strict", action="store_true",
                   help="count warnings (time going backwards) as problems: exit 1")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    p.set_defaults(func=cmd_verify)


def _add_stats(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("stats", help="per stream: message types, rate, sizes, markers, "
                                     "trade-id gaps",
                       formatter_class=fmt, description=_STATS, epilog=_STATS_EPILOG)
    p.add_argument("target", nargs="?", default="data", metavar="TARGET",
                   help="segment file, data root or folder (default: ./data)")
    _add_filters(p)
    p.add_argument("--json", action="store_true", help="one JSON object per stream")
    p.set_defaults(func=cmd_stats)


def _add_book_commands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser("book", help="the rebuilt L2 book of a product at a time",
                       formatter_class=fmt, description=_BOOK, epilog=_BOOK_EPILOG)
    p.add_argument("root", nargs="?", default="data", metavar="ROOT",
                   help="data root (default: ./data)")
    p.add_argument("-p", "--product", required=True, metavar="P", help="product, e.g. BTC-USD")
    p.add_argument("--at", required=True, type=_time, metavar="T",
                   help="the time (see times in cbl-inspect --help)")
    p.add_argument("--depth", type=int, default=10, metavar="N",
                   help="levels per side to print (default 10)")
    p.add_argument("--lookback-days", type=int, default=3, metavar="N",
                   help="how many days before T to search for a snapshot (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("integrity", help="per product and day: snapshots, gaps, crossed "
                                         "books, valid-book time, missing trade ids",
                       formatter_class=fmt, description=_INTEGRITY, epilog=_INTEGRITY_EPILOG)
    p.add_argument("root", nargs="?", default="data", metavar="ROOT",
                   help="data root (default: ./data)")
    p.add_argument("-p", "--product", metavar="P", help="only this product")
    p.add_argument("--from", dest="first", type=iso_day, metavar="DAY", help="first UTC day")
    p.add_argument("--to", dest="last", type=iso_day, metavar="DAY", help="last UTC day")
    p.add_argument("--lookback-days", type=int, default=3, metavar="N",
                   help="days before the first day to search for a snapshot (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per product and day")
    p.set_defaults(func=cmd_integrity)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args_in = sys.argv[1:] if argv is None else argv

    def body() -> int:
        if not args_in:  # no command at all: the usage, not an error about a missing word
            sys.stderr.write(parser.format_usage() + _USAGE_HINT)
            return EXIT_USAGE
        args = parser.parse_args(args_in)
        code: int = args.func(args)
        return code

    return run_tool("cbl-inspect", body)


if __name__ == "__main__":
    sys.exit(main())

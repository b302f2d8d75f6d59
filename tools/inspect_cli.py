"""cbl-inspect: look into recorded data, live segments and zstd archives alike.

Sub-commands: ls, cat, tail, verify, stats. `cbl-inspect --help` and `cbl-inspect CMD --help`
are the manual; docs/TOOLS.md has the same text with examples.
"""

from __future__ import annotations

import argparse
import sys

from tools.console_cli import ArgumentParser, ToolError, parse_time, run_tool
from tools.inspect_cat_cli import FORMATS, cmd_cat, cmd_tail
from tools.inspect_ls_cli import cmd_ls
from tools.inspect_stats_cli import cmd_stats
from tools.inspect_verify_cli import cmd_verify

_DESCRIPTION = """\
Look into recorded market data: list what is there, print records, follow a live
stream, check integrity, and summarise. Every sub-command reads live segments (.seg)
and compacted archives (.seg.zst) the same way.

TARGET is a segment file, a data root, or a product or channel folder inside one.
"""

_EPILOG = """\
times (--from/--to):
  ISO 8601 such as 2026-11-24T10:00:00Z or "2026-11-24 10:00:00.5+01:00" (no zone = UTC),
  a date (2026-11-24 = midnight UTC), or an integer: epoch seconds (up to 12 digits)
  or nanoseconds.

exit status:
  0 success; 1 a problem was found (verify) or a file could not be read; 2 usage error
  (bad option, missing path); 141 the reader of our output went away (e.g. `| head`).

examples:
  cbl-inspect ls data
  cbl-inspect cat data --product BTC-USD --channel level2 --from 2026-11-24T10:00Z | jq .
  cbl-inspect cat data/BTC-USD/matches/2026-11-24.0000.seg.zst --format table | head
  cbl-inspect tail -f BTC-USD/ticker --root data
  cbl-inspect verify data && echo clean
  cbl-inspect stats data --channel matches
"""


def _time(text: str) -> int:
    try:
        return parse_time(text)
    except ToolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_filters(p: argparse.ArgumentParser, times: bool = True) -> None:
    p.add_argument("--product", "-p", metavar="P", help="only this product (e.g. BTC-USD)")
    p.add_argument("--channel", "-c", metavar="C", help="only this channel (e.g. level2)")
    if times:
        p.add_argument("--from", dest="from_ns", type=_time, metavar="T",
                       help="first record time (inclusive); jumps there via the time index "
                            "or seek table instead of reading from the start")
        p.add_argument("--to", dest="to_ns", type=_time, metavar="T",
                       help="end time (exclusive): records strictly before T")


def build_parser() -> ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = ArgumentParser(prog="cbl-inspect", description=_DESCRIPTION, epilog=_EPILOG,
                            formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=ArgumentParser)

    p = sub.add_parser("ls", help="streams, days, segments, records, sizes, time span, gaps",
                       formatter_class=fmt, description=(
                           "List every segment under ROOT: stream (product/channel), day, "
                           "segment number,\nstate (live, sealed, archived), records, data "
                           "bytes, bytes on disk, first and\nlast record time. After each "
                           "stream, lines starting with 'gap:' name missing\ndays or segment "
                           "numbers. Reads headers and seek tables only, so it is quick."))
    p.add_argument("root", nargs="?", default="data", metavar="ROOT",
                   help="data root or folder inside it (default: ./data)")
    _add_filters(p, times=False)
    p.add_argument("--json", action="store_true", help="one JSON object per segment")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("cat", help="print records in order (raw, jsonl or table)",
                       formatter_class=fmt, description=(
                           "Print the records of TARGET in file order.\n\n"
                           "formats:\n"
                           "  raw    each message's original bytes, one per line (pipe into "
                           "jq); markers\n         (gap, disconnect, reconnect, ...) go to "
                           "stderr as '# KIND ...' lines\n"
                           "  jsonl  one JSON object per record: ts, ts_ns, kind, product, "
                           "channel, offset\n         and msg (the message itself; raw_b64 if it "
                           "is not JSON); markers included\n"
                           "  table  aligned columns for people; markers stand out as "
                           "'>>> KIND <<<'"))
    p.add_argument("target", metavar="TARGET", help="segment file, data root or folder")
    _add_filters(p)
    p.add_argument("--format", choices=FORMATS, default="raw", help="default: raw")
    p.add_argument("--merge", action="store_true",
                   help="interleave several streams by time (default: one stream after another)")
    p.add_argument("--io-stats", action="store_true", dest="show_io",
                   help="at the end, print to stderr how many records were printed and how "
                        "many bytes were read from archives (shows that --from seeks)")
    p.set_defaults(func=cmd_cat)

    p = sub.add_parser("tail", help="last records; with -f follow a live stream",
                       formatter_class=fmt, description=(
                           "Print the last N records of a segment or stream; with -f keep "
                           "printing new\nrecords while the daemon writes them, moving on to "
                           "the next segment when it\nrotates (new day or full segment). "
                           "STREAM is PRODUCT/CHANNEL under --root.\nStop with Ctrl-C."))
    p.add_argument("target", metavar="PATH|STREAM")
    p.add_argument("-f", "--follow", action="store_true", help="follow new records")
    p.add_argument("-n", "--lines", type=int, default=10, metavar="N",
                   help="records to show first (default 10)")
    p.add_argument("--root", default="data", help="data root for STREAM (default: ./data)")
    p.add_argument("--format", choices=FORMATS, default="raw", help="default: raw")
    p.add_argument("--poll", type=float, default=0.2, metavar="S",
                   help="seconds between checks for new data (default 0.2)")
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("verify", help="check headers, CRCs, ordering, seek tables",
                       formatter_class=fmt, description=(
                           "Check every selected file: segment header, every batch CRC up to "
                           "the commit\npoint, record counts and time bounds, time ordering; "
                           "for archives also the\nseek table, every zstd frame checksum and "
                           "the table's counts and bounds.\nEach problem is one line 'FILE@OFFSET:"
                           " message' on stdout. Files are only read.\n\n"
                           "exit status: 0 clean, 1 problems found, 2 usage error."))
    p.add_argument("target", metavar="PATH|ROOT")
    _add_filters(p, times=False)
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("stats", help="message counts per type, rates, sizes, sequence gaps",
                       formatter_class=fmt, description=(
                           "Summarise the selected records per stream: messages per type, "
                           "message rate,\nsizes (mean, p50, p99, max), markers by kind, and "
                           "sequence gaps per product:\ntrade_id jumps (Exchange matches, "
                           "Advanced Trade market_trades) and GAP markers\nwritten by the "
                           "recorder."))
    p.add_argument("target", nargs="?", default="data", metavar="PATH|ROOT")
    _add_filters(p)
    p.add_argument("--json", action="store_true", help="one JSON object per stream")
    p.set_defaults(func=cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()

    def body() -> int:
        args = parser.parse_args(argv)
        code: int = args.func(args)
        return code

    return run_tool("cbl-inspect", body)


if __name__ == "__main__":
    sys.exit(main())

"""cbl-merge: one gap-filled recording from two or more recordings of the same feed.

The identity rules are `tools.merge_identity`, the hole bookkeeping `tools.merge_holes`, the
per-stream merge `tools.merge_core`; this module finds the streams, reads each input twice
(markers and times first, then the records), writes the output root with the storage engine
and prints the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson

from storage import (
    DATA_DIR_META,
    CorruptSegment,
    Damage,
    Engine,
    EngineConfig,
    RecordKind,
    SegmentRef,
    open_any,
)
from storage.source import display, is_remote
from tools.console_cli import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    ArgumentParser,
    ToolError,
    iso_day,
    run_parsed,
)
from tools.merge_core import DEFAULT_WINDOW_NS, StreamReport, merge_stream
from tools.merge_holes import Coverage, resolve, scan
from tools.merge_identity import DIALECTS, identity
from tools.select_cli import describe, find_segments, latest_per_segment

META = DATA_DIR_META

_DESCRIPTION = """\
Merge recordings of the same Coinbase feed made by independent recorders (two
boxes, two regions) into one data root OUT: for every stream, the union of the
messages, each once, in receive-time order; where one recording has a hole (a gap,
disconnect, drop, crash or restart marker) and another has the data, the hole is
filled; where no recording has it, OUT gets a GAP marker there, so nothing is
missing silently.

Identity of a message (which copies are the same message):
  exchange        the message bytes (the venue sends identical bytes everywhere)
  advanced_trade  bytes without the per-connection sequence_num; level2 and
                  market_trades updates by their events alone (trade ids; event
                  time + levels), whatever the envelope timestamp
docs/MERGE.md has the exact rules and where they cannot be exact.

A hole counts as filled only if other recordings cover it entirely, widened by
--tolerance on both sides (the boxes' clocks differ). Each input's own markers
are not copied; a merged GAP marker names the markers each input had there.

INPUT is a data root (local, or s3://BUCKET/PREFIX holding shipped archives). OUT
must not exist or be an empty folder; it becomes a normal data root (sealed
segments) that every tool reads and cbl-compact archives.
"""

_EPILOG = """\
report (stdout, one line per stream; --json: one object per stream):
  STREAM  messages read from each input, kept from each, duplicates dropped,
          holes filled, gaps remaining (marked in OUT)

exit status:
  0    merged (gaps that remain are marked in OUT and reported)
  1    an input could not be read (OUT is incomplete: delete it and rerun)
  2    usage error: fewer than two inputs, OUT not empty, unknown dialect

examples:
  cbl-merge /data/box1 /data/box2 --out /data/merged --day 2026-11-20
  cbl-merge s3://md/box1 s3://md/box2 --out merged -p BTC-USD,ETH-USD --dialect exchange
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="cbl-merge", description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="two or more data roots")
    p.add_argument("--out", required=True, metavar="OUT", help="the merged data root")
    p.add_argument("--day", type=iso_day, metavar="YYYY-MM-DD", help="only this UTC day")
    p.add_argument("-p", "--products", metavar="P[,P...]", help="only these products")
    p.add_argument("-c", "--channel", metavar="C", help="only this channel")
    p.add_argument("--dialect", choices=DIALECTS,
                   help=f"the feed's dialect (default: from each local root's {META})")
    p.add_argument("--tolerance-ms", type=float, default=250.0, metavar="MS",
                   help="clock difference allowed between the recorders' hosts (default "
                        "250); a hole counts as filled only if covered this much wider")
    p.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_NS / 1e9, metavar="S",
                   help="copies of a message further apart than this are not matched "
                        f"(default {DEFAULT_WINDOW_NS / 1e9:.0f}; bounds memory)")
    p.add_argument("--json", action="store_true", help="report as one JSON object per stream")
    p.add_argument("-q", "--quiet", action="store_true", help="only the summary line")
    return p


@dataclass(frozen=True, slots=True)
class Settings:
    roots: list[str]
    dialect: str
    tolerance_ns: int
    window_ns: int


def _dialect(roots: list[str], given: str | None) -> str:
    """The dialect given, or the one every local root says it holds (they must agree)."""
    found: set[str] = set()
    for root in roots:
        if is_remote(root):
            continue
        try:
            found.add(str(json.loads((Path(root) / META).read_text()).get("dialect")))
        except (OSError, ValueError, AttributeError):
            continue
    if given is not None:
        if found - {given}:
            raise ToolError(f"--dialect {given} but the inputs say {', '.join(sorted(found))}",
                            EXIT_USAGE)
        return given
    if len(found) != 1 or not found <= set(DIALECTS):
        what = ", ".join(sorted(found)) if found else f"no {META}"
        raise ToolError(f"cannot tell the inputs' dialect ({what}): give --dialect", EXIT_USAGE)
    return found.pop()


def _check_out(out: Path, roots: list[str]) -> None:
    """OUT is new or an empty folder, and neither inside an input nor holding one."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ToolError(f"{out}: exists and is not an empty folder", EXIT_USAGE)
    real = out.resolve()
    for root in roots:
        if is_remote(root):
            continue
        r = Path(root).resolve()
        if real == r or r in real.parents or real in r.parents:
            raise ToolError(f"{out}: must not be inside input {root} (or hold it)", EXIT_USAGE)


def _streams(args: argparse.Namespace) -> dict[tuple[str, str], list[list[SegmentRef]]]:
    """(product, channel) → per input, its segments of the stream in order."""
    products = [p for p in (args.products or "").split(",") if p] or None
    out: dict[tuple[str, str], list[list[SegmentRef]]] = {}
    for i, root in enumerate(args.inputs):
        if not is_remote(root) and not Path(root).is_dir():
            raise ToolError(f"{root}: not a data root (a folder or s3://BUCKET/PREFIX)",
                            EXIT_USAGE)
        for ref in latest_per_segment(find_segments(root, None, args.channel)):
            if ref.product == "?" or (args.day and ref.day != args.day) or (
                    products and ref.product not in products):
                continue
            per = out.setdefault((ref.product, ref.channel), [[] for _ in args.inputs])
            per[i].append(ref)
    return dict(sorted(out.items()))


def records(refs: list[SegmentRef], damaged: set[str]) -> Iterator[tuple[int, int, bytes]]:
    """(ts_ns, kind, payload) of one input's segments of a stream, in file order.

    A damaged range the reader skipped is a hole in this input like any marker: it comes out
    as a GAP record where it was met (so another input may fill it, or the output marks it),
    and its description is added to ``damaged`` for the report."""
    for ref in refs:
        try:
            reader = open_any(ref.path)
        except (CorruptSegment, OSError, ValueError) as exc:
            raise ToolError(f"cannot read {describe(Path(display(ref.path)), exc)}") from None
        pending: list[Damage] = list(reader.damage)
        reader.on_damage = pending.append
        last = 0
        try:
            for rec in reader.records():
                if pending:
                    yield from _damage_holes(pending, last or rec.ts_ns, damaged)
                yield rec.ts_ns, rec.kind, rec.payload
                last = rec.ts_ns
            yield from _damage_holes(pending, last, damaged)
        except (CorruptSegment, OSError, ValueError) as exc:
            raise ToolError(f"cannot read {describe(Path(display(ref.path)), exc)}") from None
        finally:
            reader.close()


def _damage_holes(pending: list[Damage], ts_ns: int,
                  damaged: set[str]) -> Iterator[tuple[int, int, bytes]]:
    for d in pending:
        damaged.add(str(d))
        yield ts_ns, RecordKind.GAP, orjson.dumps(
            {"event": "damaged", "file": display(d.path), "offset": d.offset,
             "bytes": d.length, "records_lost": d.records})
    pending.clear()


def merge_one(engine: Engine, key: tuple[str, str], per_input: list[list[SegmentRef]],
              s: Settings, damaged: set[str]) -> StreamReport:
    """Scan every input's holes, then write the merged stream; returns its report."""
    n = len(per_input)
    covers: list[Coverage] = [
        scan(i, ((ts, kind) for ts, kind, _ in records(refs, damaged)))
        for i, refs in enumerate(per_input)]
    filled, remaining = resolve(covers, s.tolerance_ns)
    report = StreamReport(key[0], key[1], [0] * n, [0] * n, [0] * n, len(filled),
                          len(remaining), [(g.from_ns, g.to_ns) for g in remaining])
    stream = engine.stream(*key)
    merged = merge_stream([records(refs, damaged) for refs in per_input], remaining,
                          partial(identity, s.dialect), report, s.roots, s.window_ns)
    every = engine.config.commit_policy.records  # storage's commit threshold (one owner)
    pending = 0
    for ts, kind, payload in merged:
        engine.append(stream, ts, payload, RecordKind(kind))
        pending += 1
        if pending >= every:
            engine.commit()
            pending = 0
    engine.commit()
    return report


def _line(r: StreamReport, roots: list[str]) -> str:
    ins = ", ".join(f"#{i + 1} {n} read/{k} kept" for i, (n, k) in
                    enumerate(zip(r.read, r.kept, strict=True)))
    del roots
    return (f"{r.product}/{r.channel}: {ins}; {sum(r.kept)} out, {sum(r.duplicates)} "
            f"duplicates dropped; holes filled {r.gaps_filled}, gaps remaining "
            f"{r.gaps_remaining}")


def run(args: argparse.Namespace) -> int:
    if len(args.inputs) < 2:
        raise ToolError("give at least two INPUT roots to merge", EXIT_USAGE)
    if args.tolerance_ms < 0 or args.window_s <= 0:
        raise ToolError("--tolerance-ms must be >= 0 and --window-s > 0", EXIT_USAGE)
    out = Path(args.out)
    if is_remote(args.out):
        raise ToolError("--out must be a local folder (ship it afterwards with cbl-ship)",
                        EXIT_USAGE)
    _check_out(out, args.inputs)
    s = Settings([display(r) for r in args.inputs], _dialect(args.inputs, args.dialect),
                 int(args.tolerance_ms * 1e6), int(args.window_s * 1e9))
    streams = _streams(args)
    if not streams:
        raise ToolError("no segments selected in the inputs", EXIT_USAGE)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    (out / META).write_text(json.dumps({"dialect": s.dialect, "created_ns": time.time_ns(),
                                        "merged_from": s.roots}) + "\n")
    engine = Engine(EngineConfig(root=out, backend="pwrite", seal_stale_on_open=False))
    reports: list[StreamReport] = []
    damaged: set[str] = set()
    try:
        for key, per_input in streams.items():
            reports.append(merge_one(engine, key, per_input, s, damaged))
            _report(reports[-1], args, s)
    finally:
        engine.close()
    for d in sorted(damaged):
        print(f"cbl-merge: damaged: {d} (a hole in that input: filled from another or marked)",
              file=sys.stderr)
    _summary(reports, time.perf_counter() - started, out)
    return EXIT_PROBLEMS if damaged else EXIT_OK


def _report(r: StreamReport, args: argparse.Namespace, s: Settings) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(r.as_dict(s.roots)).decode() + "\n")
    elif not args.quiet:
        print(_line(r, s.roots))


def _summary(reports: list[StreamReport], wall: float, out: Path) -> None:
    kept = sum(sum(r.kept) for r in reports)
    dups = sum(sum(r.duplicates) for r in reports)
    filled = sum(r.gaps_filled for r in reports)
    left = sum(r.gaps_remaining for r in reports)
    print(f"cbl-merge: {len(reports)} stream(s) into {out}: {kept} messages, {dups} "
          f"duplicates dropped, {filled} hole(s) filled, {left} gap(s) remaining (marked) "
          f"in {wall:.1f} s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return run_parsed("cbl-merge", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())


"""`inspect verify`: every finding on its own line with file and offset; exit 0/1/2.

Every file is checked, including both copies of a segment while compaction runs, so a damaged
archive cannot hide behind an intact source (or the other way round). Problems (damage) make the
exit status 1; warnings (intact but unusual, such as time going backwards after a host clock
step) are printed the same way but only count with `--strict`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from storage import verify_file
from storage.source import display
from tools.console_cli import EXIT_OK, EXIT_PROBLEMS
from tools.select_cli import find_segments, no_match


def cmd_verify(args: argparse.Namespace) -> int:
    links: list[Path] = []
    refs = find_segments(args.target, args.product, args.channel, links)
    for link in links:
        sys.stdout.write(f"{link}: symbolic link, not followed (skipped)\n")
    if not refs:
        raise no_match(args.target, args.product, args.channel)
    problems = warnings = records = 0
    bad_files = warned_files = 0
    for ref in refs:
        report = verify_file(ref.path)
        records += report.records
        bad_files += bool(report.problems)
        warned_files += bool(report.warnings)
        for p in (*report.problems, *report.warnings):
            where = display(p.path) if p.offset is None else f"{display(p.path)}@{p.offset}"
            sys.stdout.write(f"{where}: {p.message}\n")
        problems += len(report.problems)
        warnings += len(report.warnings)
    sys.stdout.flush()
    failed = problems + len(links) + (warnings if args.strict else 0)
    if not args.quiet:
        verdict = "clean" if not problems else f"{problems} problem(s) in {bad_files} file(s)"
        if warnings:
            verdict += (f"; {warnings} warning(s) in {warned_files} file(s)"
                        + (" (--strict: counted as problems)" if args.strict else ""))
        print(f"cbl-inspect: verified {len(refs)} file(s), {records} records: {verdict}",
              file=sys.stderr)
    return EXIT_PROBLEMS if failed else EXIT_OK

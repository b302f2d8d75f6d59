"""`inspect verify`: every problem on its own line with file and offset; exit 0/1/2.

Every file is checked, including both copies of a segment while compaction runs, so a damaged
archive cannot hide behind an intact source (or the other way round).
"""

from __future__ import annotations

import argparse
import sys

from storage.archive_verify import verify_file
from tools.console_cli import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, ToolError
from tools.select_cli import find_segments


def cmd_verify(args: argparse.Namespace) -> int:
    refs = find_segments(args.target, args.product, args.channel)
    if not refs:
        raise ToolError(f"{args.target}: no segment files found", EXIT_USAGE)
    problems = records = 0
    bad_files = 0
    for ref in refs:
        report = verify_file(ref.path)
        records += report.records
        if report.problems:
            bad_files += 1
        for p in report.problems:
            problems += 1
            sys.stdout.write(f"{p}\n")
    sys.stdout.flush()
    if not args.quiet:
        verdict = "clean" if not problems else f"{problems} problem(s) in {bad_files} file(s)"
        print(f"cbl-inspect: verified {len(refs)} file(s), {records} records: {verdict}",
              file=sys.stderr)
    return EXIT_PROBLEMS if problems else EXIT_OK

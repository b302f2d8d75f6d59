"""Shared plumbing of the command-line tools: errors, closed pipes, times, progress.

Every tool promises the same things to people and scripts: bad input is one clear line on
stderr and a non-zero exit (never a traceback), `| head` never prints an error, and times are
given the way people write them. Keeping that here makes each tool's module about its job.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import NoReturn, Protocol

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a command killed by SIGPIPE (128 + 13)


class ToolError(Exception):
    """A failure to report as one line on stderr; `code` is the exit status to use."""

    def __init__(self, message: str, code: int = EXIT_PROBLEMS) -> None:
        super().__init__(message)
        self.code = code


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ToolError (exit 2) instead of calling sys.exit from deep inside."""

    def error(self, message: str) -> NoReturn:
        raise ToolError(f"{message} (see --help)", EXIT_USAGE)


def run_tool(prog: str, body: Callable[[], int]) -> int:
    """Run a tool's body, turning every expected failure into one stderr line and an exit code."""
    try:
        code = body()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except SystemExit as exc:  # argparse after --help, or a sub-command that exits early
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        _say(prog, "interrupted")
        return 130
    except ToolError as exc:
        _say(prog, str(exc))
        return exc.code
    except (OSError, ValueError) as exc:
        _say(prog, _describe(exc))
        return EXIT_PROBLEMS


def run_parsed(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
               argv: list[str] | None) -> int:
    """A one-command tool's ``main``: parse ``argv`` (None: the process's) and run it under
    :func:`run_tool`, so an argument error is one line and exit 2 like any other failure."""
    return run_tool(prog, lambda: run(parser.parse_args(argv)))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _say(prog: str, message: str) -> None:
    with suppress(BrokenPipeError, ValueError):
        print(f"{prog}: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """After the reader went away, point stdout at /dev/null so the exit-time flush is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


_INT = re.compile(r"^-?\d+$")


def parse_time(text: str) -> int:
    """A user-given time as UTC nanoseconds since the epoch.

    Accepts ISO 8601 (`2026-11-24T10:00:00Z`, `2026-11-24 10:00:00.5+01:00`; no zone means UTC),
    a bare date (`2026-11-24`, midnight UTC), or an integer: epoch seconds when it has at most 12
    digits, else nanoseconds.
    """
    s = text.strip()
    if _INT.match(s):
        n = int(s)
        return n * 1_000_000_000 if len(s.lstrip("-")) <= 12 else n
    try:
        when = dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ToolError(
            f"cannot read time {text!r}: use ISO 8601 like 2026-11-24T10:00:00Z, a date, "
            "or epoch seconds/nanoseconds", EXIT_USAGE,
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def format_time(ts_ns: int) -> str:
    """UTC time with nanoseconds, e.g. 2026-11-24T10:00:00.123456789Z."""
    secs, frac = divmod(ts_ns, 1_000_000_000)
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=secs)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress(Protocol):
    def advance(self, label: str, amount: int) -> None: ...


class _PlainProgress:
    """One line per finished item: readable in a log file, a pipe or journald."""

    def __init__(self, total: int) -> None:
        self._done = 0
        self._total = total

    def advance(self, label: str, amount: int) -> None:
        self._done += amount
        pct = 100.0 * self._done / self._total if self._total else 100.0
        print(f"[{pct:5.1f}%] {label}", file=sys.stderr, flush=True)


class _RichProgress:
    def __init__(self, bar: object, task: object) -> None:
        self._bar = bar
        self._task = task

    def advance(self, label: str, amount: int) -> None:
        self._bar.update(self._task, advance=amount, description=label)  # type: ignore[attr-defined]


@contextmanager
def progress(total: int, description: str, quiet: bool = False) -> Iterator[Progress]:
    """A rich progress bar when stderr is a terminal, plain lines otherwise, nothing if quiet."""
    if quiet:
        yield _NoProgress()
        return
    if sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        with RichProgress(*columns, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield _RichProgress(bar, task)
        return
    yield _PlainProgress(total)


class _NoProgress:
    def advance(self, label: str, amount: int) -> None:
        return None


def iso_day(text: str) -> dt.date:
    """An argparse ``type`` for a UTC day given as YYYY-MM-DD (every tool's --day/--from/--to
    day option): a wrong one is a one-line usage error."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from None

"""What a command over many files could not read: said as it is found, summed up at the end.

Readers skip a damaged batch or frame and go on (storage.damage); commands over many files go
on past a file they cannot open at all. Either way the user is told, on stderr, one line per
skipped range (``file@offset: … N bytes skipped (~K records lost)``) or file, then a summary,
and the command exits 1 — output from the rest of the data is complete, never silently short.
Symbolic links under the data root are not followed by any tool; they are listed here too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from storage import ArchiveReader, Damage, SegmentReader
from tools.console_cli import EXIT_OK, EXIT_PROBLEMS


class DamageReport:
    """Collects damaged ranges, unreadable files and skipped symlinks of one command run."""

    def __init__(self, prog: str = "cbl-inspect", err: TextIO | None = None) -> None:
        self.prog = prog
        self.err = err if err is not None else sys.stderr
        self.ranges = 0
        self.records_lost = 0
        self.files: set[Path] = set()
        self.unreadable: list[str] = []
        self.links: list[Path] = []

    def watch(self, reader: SegmentReader | ArchiveReader) -> None:
        """Report the reader's damage so far and from now on, as it is found."""
        for d in reader.damage:
            self.damaged(d)
        reader.on_damage = self.damaged

    def damaged(self, d: Damage) -> None:
        self.ranges += 1
        self.records_lost += d.records
        self.files.add(d.path)
        self._say(f"damaged: {d}")

    def file_failed(self, message: str) -> None:
        self.unreadable.append(message)
        self._say(f"skipped: {message}")

    def skipped_links(self, paths: list[Path]) -> None:
        for p in paths:
            self.links.append(p)
            self._say(f"skipped: {p} is a symbolic link (never followed)")

    @property
    def clean(self) -> bool:
        return not (self.ranges or self.unreadable or self.links)

    def summary(self) -> str:
        parts = []
        if self.ranges:
            parts.append(f"{self.ranges} damaged range(s) skipped in {len(self.files)} file(s) "
                         f"(~{self.records_lost} records lost)")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable file(s) skipped")
        if self.links:
            parts.append(f"{len(self.links)} symbolic link(s) not followed")
        return "; ".join(parts)

    def finish(self, code: int = EXIT_OK) -> int:
        """Print the summary (when more than one thing was skipped: one is its own summary)
        and give the exit status: 1 if anything was skipped."""
        if self.clean:
            return code
        if self.ranges + len(self.unreadable) + len(self.links) > 1:
            self._say(self.summary())
        return EXIT_PROBLEMS

    def _say(self, line: str) -> None:
        self.err.write(f"{self.prog}: {line}\n")
        self.err.flush()

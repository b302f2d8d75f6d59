"""Decide whether the io_uring backend can be used on this machine.

Why a subprocess: the ways io_uring fails in the field are not all exceptions. A liburing wheel
built for a newer CPU dies with SIGILL on import, a seccomp profile (Docker's default before
25.0, many Kubernetes runtimes) kills the process or returns EPERM from ``io_uring_setup``, and
``kernel.io_uring_disabled`` refuses rings outright. None of the fatal ones can be caught
in-process, so the probe runs a tiny child that loads liburing, sets up a ring with the real
``UringBackend``, writes and fdatasyncs a few bytes of a temporary file through it, reads them
back, and prints ``ok``. Only a child that exits 0 having printed ``ok`` makes the answer True;
a signal, a non-zero exit, unexpected output or a timeout makes it False, with a reason for the
log.

The answer is cached per process: the engine asks once at start-up ("auto" backend) and the
daemon logs the reason.
"""

from __future__ import annotations

import functools
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Where Linux (6.6+) says whether io_uring may be used: 0 yes, 1 only for privileged users
#: or members of ``kernel.io_uring_group``, 2 never. Absent on older kernels (= allowed).
IO_URING_DISABLED_SYSCTL = Path("/proc/sys/kernel/io_uring_disabled")

#: A probe that takes longer than this is treated as broken (a hung ring is worse than mmap).
PROBE_TIMEOUT_S = 10.0

_PROBE_OK = "ok"

#: The child's program: the real UringBackend (so the probe proves the code that will run, not a
#: look-alike) writes two ops plus a linked fdatasync, syncs, and the bytes are read back with
#: pread. argv[1] is the directory holding the ``storage`` package.
PROBE_SOURCE = r"""
import os, sys, tempfile
sys.path.insert(0, sys.argv[1])
from storage.backends.base import WriteOp
from storage.backends.uring_backend import UringBackend

backend = UringBackend(8)
fd, path = tempfile.mkstemp(prefix="uring-probe-")
try:
    backend.write([WriteOp(fd, None, 0, b"coinbase-logger "), WriteOp(fd, None, 16, b"io_uring")])
    backend.write([WriteOp(fd, None, 24, b" probe")], datasync=True)
    backend.sync([fd])
    if os.pread(fd, 64, 0) != b"coinbase-logger io_uring probe":
        sys.exit("io_uring wrote different bytes than it was given")
finally:
    os.close(fd)
    os.unlink(path)
    backend.close()
print("ok")
"""

#: The directory that holds the ``storage`` package, handed to the child.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def platform_reason(system: str, machine: str) -> str | None:
    """Why io_uring is out of the question on this platform, or None if it may work.

    The liburing wheel the project pins is built for Linux x86_64 only.
    """
    if system != "Linux":
        return f"io_uring needs Linux, this is {system or 'an unknown system'}"
    if machine not in ("x86_64", "AMD64"):
        return f"the liburing wheel is built for x86_64, this machine is {machine or 'unknown'}"
    return None


def sysctl_reason(path: Path = IO_URING_DISABLED_SYSCTL) -> str | None:
    """Why ``kernel.io_uring_disabled`` rules io_uring out, or None if it may work.

    Value 1 permits only privileged processes; the child probe finds out whether this one is,
    so only 2 (disabled for everyone) decides here.
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None  # kernel older than 6.6: no switch, io_uring enabled if compiled in
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if text == "2":
        return f"io_uring is disabled by sysctl ({path} = 2)"
    return None


def run_probe(argv: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Run a probe child and judge it: True only for exit status 0 with ``ok`` on stdout.

    Separated from the default program so that every way a child can fail (killed by a signal,
    exit status, garbage output, hang) is decided by the same code path the real probe uses.
    """
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"io_uring probe timed out after {timeout_s:g} s"
    except OSError as exc:
        return False, f"io_uring probe could not start: {exc}"
    stderr_tail = _tail(proc.stderr)
    if proc.returncode < 0:
        return False, f"io_uring probe killed by {_signal_name(-proc.returncode)}{stderr_tail}"
    if proc.returncode != 0:
        return False, f"io_uring probe exited with status {proc.returncode}{stderr_tail}"
    out = proc.stdout.decode("utf-8", "replace").strip()
    if out != _PROBE_OK:
        return False, f"io_uring probe printed {out[:200]!r} instead of {_PROBE_OK!r}"
    return True, "io_uring probe passed (ring setup, linked writes, fdatasync, read back)"


def probe_argv() -> list[str]:
    """The command line of the default probe: this interpreter running ``PROBE_SOURCE``."""
    return [sys.executable, "-c", PROBE_SOURCE, _PACKAGE_ROOT]


def decide(
    system: str,
    machine: str,
    sysctl: Path = IO_URING_DISABLED_SYSCTL,
    argv: Sequence[str] | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> tuple[bool, str]:
    """The probe's decision, cheapest check first: platform, sysctl, then the child (only
    started when the first two leave a chance)."""
    reason = platform_reason(system, machine)
    if reason is None:
        reason = sysctl_reason(sysctl)
    if reason is not None:
        return False, reason
    return run_probe(probe_argv() if argv is None else argv, timeout_s)


@functools.cache
def uring_probe() -> tuple[bool, str]:
    """Whether the io_uring backend works here, and why (for the log). Cached per process."""
    return decide(platform.system(), platform.machine())


def uring_available() -> bool:
    """True when the io_uring backend is proven to work in a child process (cached)."""
    return uring_probe()[0]


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _tail(stderr: bytes, limit: int = 300) -> str:
    """The last line(s) of a child's stderr, short enough for one log line."""
    text = stderr.decode("utf-8", "replace").strip()
    if not text:
        return ""
    text = text[-limit:].replace(os.linesep, " | ")
    return f": {text}"

"""The io_uring probe: every way a probe child can fail makes the answer False, with a reason.

The failing children are real processes (killed by a real signal, really exiting non-zero,
really hanging), judged by the same ``run_probe`` the real probe goes through.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from storage.backends import probe

PY = sys.executable


def _machine_allows_uring() -> bool:
    if probe.platform_reason(platform.system(), platform.machine()) is not None:
        return False
    try:
        return probe.IO_URING_DISABLED_SYSCTL.read_text().strip() in ("", "0")
    except FileNotFoundError:
        return True


def test_real_probe_passes_where_the_kernel_allows_io_uring() -> None:
    if not _machine_allows_uring():
        pytest.skip("io_uring is not permitted on this machine (platform or sysctl)")
    ok, reason = probe.run_probe(probe.probe_argv())
    assert ok, reason
    assert "passed" in reason


def test_answer_is_cached_per_process() -> None:
    first = probe.uring_probe()
    hits = probe.uring_probe.cache_info().hits
    assert probe.uring_probe() is first
    assert probe.uring_probe.cache_info().hits == hits + 1
    assert probe.uring_available() is first[0]


def test_child_killed_by_sigill_means_unavailable() -> None:
    # What an AVX-512-only wheel does on an older CPU: the interpreter dies on a signal.
    ok, reason = probe.run_probe(
        [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"]
    )
    assert not ok
    assert "killed by SIGILL" in reason


def test_child_killed_by_sigsys_means_unavailable() -> None:
    # What a seccomp filter with SECCOMP_RET_KILL / RET_TRAP does to io_uring_setup.
    ok, reason = probe.run_probe(
        [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSYS)"]
    )
    assert not ok
    assert "killed by SIGSYS" in reason


def test_child_exiting_nonzero_means_unavailable_and_reports_stderr() -> None:
    ok, reason = probe.run_probe(
        [PY, "-c", "import sys; sys.stderr.write('EPERM from io_uring_setup'); sys.exit(3)"]
    )
    assert not ok
    assert "status 3" in reason
    assert "EPERM from io_uring_setup" in reason


def test_child_exiting_zero_without_ok_means_unavailable() -> None:
    ok, reason = probe.run_probe([PY, "-c", "print('maybe')"])
    assert not ok
    assert "'maybe'" in reason


def test_hanging_child_times_out_and_is_killed() -> None:
    ok, reason = probe.run_probe([PY, "-c", "import time; time.sleep(60)"], timeout_s=0.5)
    assert not ok
    assert "timed out" in reason


def test_missing_interpreter_means_unavailable(tmp_path: Path) -> None:
    ok, reason = probe.run_probe([str(tmp_path / "no-such-python"), "-c", "print('ok')"])
    assert not ok
    assert "could not start" in reason


def test_probe_program_fails_when_liburing_is_broken(tmp_path: Path) -> None:
    # A liburing package without its extension modules, first on the child's sys.path: the
    # real probe program hits a real import failure.
    (tmp_path / "liburing").mkdir()
    (tmp_path / "liburing" / "__init__.py").write_text("")
    argv = probe.probe_argv()
    argv[2] = f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n" + argv[2]
    ok, reason = probe.run_probe(argv)
    assert not ok
    assert "status 1" in reason
    assert "liburing.queue" in reason


def test_probe_program_prints_ok_and_only_ok() -> None:
    if not _machine_allows_uring():
        pytest.skip("io_uring is not permitted on this machine (platform or sysctl)")
    argv = probe.probe_argv()
    argv[2] += "\nprint('extra')"
    ok, _ = probe.run_probe(argv)
    assert not ok


@pytest.mark.parametrize(
    ("system", "machine", "expected"),
    [
        ("Linux", "x86_64", None),
        ("Linux", "aarch64", "x86_64"),
        ("Darwin", "arm64", "needs Linux"),
        ("Windows", "AMD64", "needs Linux"),
    ],
)
def test_platform_gate(system: str, machine: str, expected: str | None) -> None:
    reason = probe.platform_reason(system, machine)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None
        assert expected in reason


@pytest.mark.parametrize(
    ("content", "disabled"), [("0\n", False), ("1\n", False), ("2\n", True)]
)
def test_sysctl_gate(tmp_path: Path, content: str, disabled: bool) -> None:
    path = tmp_path / "io_uring_disabled"
    path.write_text(content)
    reason = probe.sysctl_reason(path)
    assert (reason is not None) is disabled
    if disabled:
        assert reason is not None and "disabled" in reason


def test_sysctl_absent_means_older_kernel_without_the_switch(tmp_path: Path) -> None:
    assert probe.sysctl_reason(tmp_path / "absent") is None


def test_sysctl_unreadable_is_a_reason(tmp_path: Path) -> None:
    # A directory where the file should be: reading fails with an OSError other than ENOENT.
    assert probe.sysctl_reason(tmp_path) is not None


def test_decision_checks_platform_and_sysctl_before_starting_a_child(tmp_path: Path) -> None:
    marker = tmp_path / "child-ran"
    argv = [PY, "-c", f"open({str(marker)!r}, 'w'); print('ok')"]
    disabled = tmp_path / "io_uring_disabled"
    disabled.write_text("2\n")
    allowed = tmp_path / "allowed"
    allowed.write_text("0\n")

    ok, reason = probe.decide("Darwin", "arm64", allowed, argv)
    assert not ok and "needs Linux" in reason
    ok, reason = probe.decide("Linux", "x86_64", disabled, argv)
    assert not ok and "disabled" in reason
    assert not marker.exists()  # no child was started for a foregone answer

    ok, reason = probe.decide("Linux", "x86_64", allowed, argv)
    assert ok, reason
    assert marker.exists()


def test_decision_is_false_when_the_child_dies(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.write_text("0\n")
    argv = [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
    ok, reason = probe.decide("Linux", "x86_64", allowed, argv)
    assert not ok
    assert "SIGKILL" in reason

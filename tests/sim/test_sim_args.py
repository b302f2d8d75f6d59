"""Every argument error of `tools/simulate` and `python -m logger` is one line and exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(REPO / "tools" / "simulate"), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(("args", "says"), [
    (["serve", "--port", "70000"], "argument --port: a port is 0..65535 (0 = any free port), "
                                   "got 70000"),
    (["serve", "--port", "x"], "argument --port: not a port number: 'x'"),
    (["serve", "--products", "-5"], "argument --products: a product count must be at least 1,"
                                    " got -5"),
    (["serve", "--products", "BTC-USD,-X"], "argument --products: '-X' is not a product id"),
    (["serve", "--rate", "-1"], "argument --rate: must be at least 0, got -1"),
    (["serve", "--l2-cap", "0"], "argument --l2-cap: must be at least 1, got 0"),
    (["replay", "--port", "-1", "--root", "."], "argument --port: a port is 0..65535"),
    (["replay"], "the following arguments are required: --root"),
    (["nope"], "argument cmd: invalid choice: 'nope'"),
])
def test_simulate_argument_errors_are_one_line(args: list[str], says: str) -> None:
    done = _sim(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("simulate: ")
    assert says in done.stderr and "Traceback" not in done.stderr


def test_simulate_port_in_use_is_said_in_words() -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        done = _sim("serve", "--port", str(port), "--duration", "1")
    finally:
        busy.close()
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "address already in use" in done.stderr.lower() and "Errno" not in done.stderr


@pytest.mark.parametrize("args", [["run", "--metrics-port", "x"], ["nope"], [],
                                  ["run", "--dialect", "fix"]])
def test_logger_cli_argument_errors_are_one_line(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "logger", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("coinbase-logger: ")

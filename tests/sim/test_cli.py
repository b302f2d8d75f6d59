"""``tools/simulate``: the announced JSON line, clean exit on SIGTERM/duration with the ledger
written, clear errors (exit 2) for bad arguments; ``replay`` over a recorded root."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from simhelpers import at_sub, client, close_draining, read_n, read_until_closed

from storage import Engine, EngineConfig
from tools.venue.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "simulate"


def _start(*args: str) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    proc = subprocess.Popen([str(TOOL), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else b""
    return proc, orjson.loads(line)


def test_serve_announces_streams_and_writes_the_ledger_on_sigterm(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    proc, info = _start("serve", "--dialect", "advanced_trade", "--products", "5", "--rate",
                        "2000", "--seed", "3", "--ledger", str(ledger), "--faults",
                        "error_reply@40")
    try:
        assert str(info["ws_url"]).startswith("ws://127.0.0.1:")
        assert str(info["rest_url"]).endswith("/api/v3/brokerage/market/products")

        async def main() -> list[bytes]:
            async with client(str(info["ws_url"])) as ws:
                await ws.send(at_sub("level2", ["BTC-USD"]))
                got = await read_n(ws, 100)
                await close_draining(ws)
                return got
        got = asyncio.run(main())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    led = Ledger.load(ledger)
    frames = led.frames(0)
    assert len(frames) >= 100
    assert [f.len for f in frames[:100]] == [len(g) for g in got]
    assert led.faults(0)[0]["fault"] == "error_reply" and b'"type":"error"' in got[40]


def test_serve_stops_by_itself_after_duration(tmp_path: Path) -> None:
    r = subprocess.run([str(TOOL), "serve", "--dialect", "exchange", "--duration", "0.3",
                        "--ledger", str(tmp_path / "l.jsonl")], capture_output=True, cwd=ROOT,
                       timeout=30)
    assert r.returncode == 0
    assert list(orjson.loads(r.stdout.splitlines()[0])) == ["ws_url", "rest_url", "port"]
    assert (tmp_path / "l.jsonl").exists()


def test_bad_arguments_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    r = subprocess.run([str(TOOL), "serve", "--faults", "stall:-1@3"], capture_output=True,
                       cwd=ROOT, timeout=30)
    assert r.returncode == 2 and b"bad argument '-1' for stall" in r.stderr
    r = subprocess.run([str(TOOL), "serve", "--host", "0.0.0.0", "--duration", "0.1"],
                       capture_output=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and b"loopback only" in r.stderr
    r = subprocess.run([str(TOOL), "replay", "--root", str(tmp_path)], capture_output=True,
                       cwd=ROOT, timeout=30)
    assert r.returncode == 2 and b"no recorded segments" in r.stderr


@pytest.mark.parametrize("exact", [False, True])
def test_replay_cli_serves_a_recorded_root(tmp_path: Path, exact: bool) -> None:
    ts0 = 1_767_312_000 * 10**9
    payloads = [b'{"type":"ticker","product_id":"BTC-USD","n":%d}' % k for k in range(50)]
    with Engine(EngineConfig(root=tmp_path, backend="mmap")) as eng:
        s = eng.stream("BTC-USD", "ticker")
        eng.extend(s, [ts0 + k * 1000 for k in range(50)], payloads)
    proc, info = _start("replay", "--root", str(tmp_path), "--day", "2026-01-02", "--speed",
                        "max", "--dialect", "exchange", "--linger", "0.1",
                        *(["--exact"] if exact else []))
    try:
        async def main() -> list[bytes]:
            async with client(str(info["ws_url"])) as ws:
                await ws.send('{"type":"subscribe","product_ids":["BTC-USD"],'
                              '"channels":["ticker"]}')
                return await read_until_closed(ws, timeout=30)
        got = asyncio.run(main())
        if exact:  # the stored bytes, nothing else
            assert got == payloads
        else:  # the venue's ack first, as Exchange sends it, then the recording
            assert got[0] == (b'{"type":"subscriptions","channels":[{"name":"ticker",'
                              b'"product_ids":["BTC-USD"],"account_ids":null}]}')
            assert got[1:] == payloads
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0


def test_python_dash_m_entry_point_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "tools.venue", "serve", "--duration", "0.2"],
                       capture_output=True, cwd=ROOT, env=env, timeout=30)
    assert r.returncode == 0 and b"ws_url" in r.stdout

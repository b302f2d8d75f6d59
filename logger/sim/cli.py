"""``tools/simulate``: run the simulated venue (``serve``) or replay recorded data (``replay``).

Both print ONE JSON line on stdout once listening — ``{"ws_url": ..., "rest_url": ...,
"port": ...}`` — so a parent process (``python -m logger demo``, tests) can read the address,
then run until ``--duration`` elapses or SIGTERM/SIGINT arrives, write the ledger and exit 0.
Diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import orjson

from logger.sim.faults import FaultSpecError, parse_faults
from logger.sim.limits import Limits
from logger.sim.server import SimConfig, Simulator


def _products(text: str) -> int | list[str]:
    if text.isdigit():
        return int(text)
    ids = [p.strip() for p in text.split(",") if p.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("--products takes a count or a comma-separated list")
    return ids


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="simulate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="a live simulated Coinbase venue on 127.0.0.1")
    s.add_argument("--dialect", choices=("advanced_trade", "exchange"),
                   default="advanced_trade")
    s.add_argument("--host", default="127.0.0.1", help="loopback only")
    s.add_argument("--port", type=int, default=0, help="0 = any free port")
    s.add_argument("--products", type=_products, default=20,
                   help="a count (realistic ids) or a comma-separated list of ids")
    s.add_argument("--rate", type=float, default=200.0,
                   help="market events per second across products; 0 = as fast as drained")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until signalled")
    s.add_argument("--ledger", type=Path, default=None, help="write the ledger (JSONL) here")
    s.add_argument("--faults", default="", help="fault spec, see docs/SIMULATOR.md")
    s.add_argument("--start-ns", type=int, default=None,
                   help="virtual clock start (ns since epoch); default: now")
    s.add_argument("--tape", type=int, default=0, metavar="N",
                   help="pre-generate N events and cycle them (AT only; see docs)")
    s.add_argument("--no-limits", action="store_true", help="disable every venue limit")
    s.add_argument("--l2-cap", type=int, default=30, help="level2 products per AT connection")
    s.add_argument("--opens-per-second", type=int, default=8)
    s.add_argument("--messages-per-second", type=int, default=None,
                   help="client messages per second per IP (default: the dialect's, "
                        "AT 8, Exchange 100; 0 = unchecked)")
    s.add_argument("--subscribe-timeout", type=float, default=5.0)
    s.add_argument("--max-inbound", type=int, default=64 * 1024, help="bytes per client message")
    s.add_argument("--send-buffer", type=int, default=32 << 20,
                   help="unsent bytes before a slow consumer is dropped")
    s.add_argument("--slow-consumer-s", type=float, default=10.0)

    r = sub.add_parser("replay", help="serve recorded segments/archives as a live feed")
    r.add_argument("--root", type=Path, required=True,
                   help="data root written by the daemon, or s3://BUCKET/PREFIX holding its "
                        "shipped archives (read with range requests)")
    r.add_argument("--day", default=None, help="UTC day YYYY-MM-DD (default: every day)")
    r.add_argument("--products", default=None, help="comma-separated product ids")
    r.add_argument("--speed", default="1", help="1 (original pacing), 10, any factor, or max")
    r.add_argument("--dialect", choices=("advanced_trade", "exchange"),
                   default="advanced_trade", help="subscribe format clients will use")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=0)
    r.add_argument("--duration", type=float, default=0.0)
    r.add_argument("--ledger", type=Path, default=None)
    r.add_argument("--at-end", choices=("close", "hold"), default="close",
                   help="after the last record: close (1000) or keep the connection open")
    r.add_argument("--linger", type=float, default=2.0,
                   help="seconds of silence before the end-of-replay close")
    return ap


async def _run_until(duration: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if duration > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
    else:
        await stop.wait()


async def _serve(a: argparse.Namespace) -> int:
    limits = Limits(enabled=not a.no_limits, l2_products_per_conn=a.l2_cap,
                    opens_per_second=a.opens_per_second,
                    messages_per_second=a.messages_per_second,
                    subscribe_timeout_s=a.subscribe_timeout, max_inbound_bytes=a.max_inbound,
                    send_buffer_bytes=a.send_buffer, slow_consumer_s=a.slow_consumer_s)
    sim = Simulator(SimConfig(host=a.host, port=a.port, dialect=a.dialect, products=a.products,
                              rate_msgs_per_s=a.rate, seed=a.seed, faults=parse_faults(a.faults),
                              limits=limits, start_ns=a.start_ns, ledger=a.ledger is not None,
                              ledger_path=a.ledger, tape_events=a.tape))
    await sim.start()
    _announce(sim.ws_url, sim.rest_url, sim.port)
    try:
        await _run_until(a.duration)
    finally:
        await sim.stop()
    print(f"simulate: {sim.sent_events} market events, {sim.connections_opened} connections",
          file=sys.stderr)
    return 0


async def _replay(a: argparse.Namespace) -> int:
    from logger.sim.replay import ReplayConfig, ReplayServer, parse_speed

    products = [p for p in (a.products or "").split(",") if p] or None
    srv = ReplayServer(ReplayConfig(root=a.root, day=a.day, products=products,
                                    speed=parse_speed(a.speed), dialect=a.dialect, host=a.host,
                                    port=a.port, ledger=a.ledger is not None,
                                    ledger_path=a.ledger, at_end=a.at_end,
                                    linger_s=a.linger))
    await srv.start()
    _announce(srv.ws_url, srv.rest_url, srv.port)
    try:
        await _run_until(a.duration)
    finally:
        await srv.stop()
    return 0


def _announce(ws_url: str, rest_url: str, port: int) -> None:
    sys.stdout.write(orjson.dumps({"ws_url": ws_url, "rest_url": rest_url, "port": port})
                     .decode() + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.cmd == "serve":
            return asyncio.run(_serve(a))
        return asyncio.run(_replay(a))
    except (FaultSpecError, ValueError, OSError) as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 2

"""``tools/simulate``: run the simulated venue (``serve``) or replay recorded data (``replay``).

Both print ONE JSON line on stdout once listening — ``{"ws_url": ..., "rest_url": ...,
"port": ...}`` — so a parent process (``tools/demo``, tests) can read the address,
then run until ``--duration`` elapses or SIGTERM/SIGINT arrives, write the ledger and exit 0.
Diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import orjson

from tools.venue.faults import FaultSpecError, parse_faults
from tools.venue.limits import Limits
from tools.venue.server import SimConfig, Simulator


class _Parser(argparse.ArgumentParser):
    """Every argument error is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"simulate: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _products(text: str) -> int | list[str]:
    """A count of products (>= 1) or a comma-separated list of ids."""
    t = text.strip()
    if re.fullmatch(r"[-+]?\d+", t):
        if int(t) < 1:
            raise argparse.ArgumentTypeError(f"a product count must be at least 1, got {t}")
        return int(t)
    ids = [p.strip() for p in t.split(",") if p.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("takes a count or a comma-separated list of ids")
    for p in ids:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", p):
            raise argparse.ArgumentTypeError(f"{p!r} is not a product id (like BTC-USD)")
    return ids


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0 = any free port), got {port}")
    return port


def _at_least(low: float, kind: type[int] | type[float] = float
              ) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or value != value:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="simulate", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    s = sub.add_parser("serve", help="a live simulated Coinbase venue on 127.0.0.1")
    s.add_argument("--dialect", choices=("advanced_trade", "exchange"),
                   default="advanced_trade")
    s.add_argument("--host", default="127.0.0.1", help="loopback only")
    s.add_argument("--port", type=_port, default=0, help="0 = any free port")
    s.add_argument("--products", type=_products, default=20,
                   help="a count (realistic ids) or a comma-separated list of ids")
    s.add_argument("--rate", type=_at_least(0), default=200.0,
                   help="market events per second across products; 0 = as fast as drained")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--duration", type=_at_least(0), default=0.0,
                   help="seconds; 0 = until signalled")
    s.add_argument("--ledger", type=Path, default=None, help="write the ledger (JSONL) here")
    s.add_argument("--faults", default="", help="fault spec, see docs/SIMULATOR.md")
    s.add_argument("--start-ns", type=int, default=None,
                   help="virtual clock start (ns since epoch); default: now")
    s.add_argument("--tape", type=_at_least(0, int), default=0, metavar="N",
                   help="pre-generate N events and cycle them (AT only; see docs)")
    s.add_argument("--no-limits", action="store_true", help="disable every venue limit")
    s.add_argument("--l2-cap", type=_at_least(1, int), default=30,
                   help="level2 products per AT connection")
    s.add_argument("--opens-per-second", type=_at_least(1, int), default=8)
    s.add_argument("--messages-per-second", type=_at_least(0, int), default=None,
                   help="client messages per second per IP (default: the dialect's, "
                        "AT 8, Exchange 100; 0 = unchecked)")
    s.add_argument("--subscribe-timeout", type=_at_least(0), default=5.0)
    s.add_argument("--max-inbound", type=_at_least(1, int), default=64 * 1024,
                   help="bytes per client message")
    s.add_argument("--send-buffer", type=_at_least(1, int), default=32 << 20,
                   help="unsent bytes before a slow consumer is dropped")
    s.add_argument("--slow-consumer-s", type=_at_least(0), default=10.0)

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
    r.add_argument("--port", type=_port, default=0, help="0 = any free port")
    r.add_argument("--duration", type=_at_least(0), default=0.0)
    r.add_argument("--ledger", type=Path, default=None)
    r.add_argument("--at-end", choices=("close", "hold"), default="close",
                   help="after the last record: close (1000) or keep the connection open")
    r.add_argument("--exact", action="store_true",
                   help="send the stored bytes exactly: no subscription acks, the recorded "
                        "sequence_num values, late subscribes join at the replay time "
                        "(default: answer like the venue, so a recorder can record it again)")
    r.add_argument("--linger", type=_at_least(0), default=2.0,
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
    from tools.venue.replay import ReplayConfig, ReplayServer, parse_speed

    products = [p for p in (a.products or "").split(",") if p] or None
    srv = ReplayServer(ReplayConfig(root=a.root, day=a.day, products=products,
                                    speed=parse_speed(a.speed), dialect=a.dialect, host=a.host,
                                    port=a.port, ledger=a.ledger is not None,
                                    ledger_path=a.ledger, at_end=a.at_end,
                                    linger_s=a.linger, venue=not a.exact))
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
    except OSError as e:  # e.g. the port is taken: in words, no [Errno N]
        where = f"{a.host}:{a.port}: " if getattr(a, "port", None) is not None else ""
        print(f"simulate: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except (FaultSpecError, ValueError) as e:
        print(f"simulate: {e}", file=sys.stderr)
        return 2

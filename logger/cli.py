"""Command line: ``python -m logger run`` (the daemon).

``run`` with ``ingest.workers`` > 1 runs the supervisor, which starts its worker processes as
``python -m logger worker`` (an internal subcommand configured over its stdin).

Flags override the config file through ``load_config(path, overrides)`` so the file, the
flags and the validation share one schema: a bad flag value is the same clear ``ConfigError``
naming the key as a bad file value.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import NoReturn

from logger.config import ConfigError, load_config, parse_override


class _Parser(argparse.ArgumentParser):
    """Every argument error is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"coinbase-logger: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m logger",
                 description="Lossless recorder of Coinbase public market data.")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run the ingest daemon until SIGTERM/SIGINT")
    r.add_argument("--config", help="TOML config file (see config.example.toml)")
    r.add_argument("--data-dir", help="storage.data_dir")
    r.add_argument("--ws-url", help="venue.ws_url")
    r.add_argument("--rest-url", help="venue.rest_url")
    r.add_argument("--products", help='venue.products: "all" or A,B,C')
    r.add_argument("--dialect", choices=("advanced_trade", "exchange"), help="venue.dialect")
    r.add_argument("--metrics-port", type=int, help="metrics.port (0 = any free port)")
    r.add_argument("--allow-venue-change", action="store_true",
                   help="storage.allow_venue_change: record into a root of another venue")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. --set storage.commit_records=5000")
    sub.add_parser("worker", help="internal: one worker process of a daemon running with "
                   "ingest.workers > 1 (started by the daemon itself)")
    return ap


def overrides_from(args: argparse.Namespace) -> dict[str, object]:
    """CLI flags → dotted config keys (strings parsed by the key's own type)."""
    out: dict[str, object] = {}
    flat = {
        "storage.data_dir": args.data_dir, "venue.ws_url": args.ws_url,
        "venue.rest_url": args.rest_url, "venue.products": args.products,
        "venue.dialect": args.dialect,
    }
    for key, text in flat.items():
        if text is not None:
            out[key] = parse_override(key, text)
    if args.metrics_port is not None:
        out["metrics.port"] = args.metrics_port
    if args.allow_venue_change:
        out["storage.allow_venue_change"] = True
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_override(key.strip(), text.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:  # moved with the simulator out of the ingest layer
        print("coinbase-logger: the demo is a tool now: run `make demo` or `tools/demo`",
              file=sys.stderr)
        return 2
    args = _parser().parse_args(argv)
    if args.cmd == "worker":
        from logger.worker import main as worker_main

        return worker_main()
    try:
        cfg = load_config(args.config, overrides_from(args))
    except ConfigError as e:
        print(f"coinbase-logger: config error: {e}", file=sys.stderr)
        return 2
    from logger.daemon import Daemon, configure_logging, pin_cpu

    configure_logging(cfg.log.level, cfg.log.format)
    if cfg.ingest.workers > 1:
        from logger.supervisor import Supervisor

        return asyncio.run(Supervisor(cfg).run())  # each worker pins itself
    pin_cpu(cfg, 0)
    return asyncio.run(Daemon(cfg).run()).exit_code

"""Chaos run: the simulator (with a ledger) and the daemon under a seeded fault schedule, then
the no-silent-loss check.

    python bench/chaos.py --seconds 180 --seed 1        (also: make chaos)

The schedule mixes faults of several kinds (``FAULTS``): the venue's own faults set up when it
starts (disconnect storms, sequence gaps, ping floods, a trickling REST endpoint:
``tools/venue/faults.py`` spec items over the
connection ids a run will use) and timed actions on the daemon and its disk (``kill -9`` and a
restart, SIGTERM and a restart, a full disk on a real small tmpfs that is freed again). At the
end the daemon is stopped, the venue writes its ledger, and every ledger frame that is not
stored must lie in its stream where a marker says data may be missing
(``tools.venue.coverage``). Printed: frames sent, stored, missing, missing inside markers (must
be 100 %), kills, full-disk episodes, peak RSS against the documented bound (docs/RUNTIME.md,
Memory bound), the longest SIGTERM-to-exit; the last line is the same as JSON. Exit status 0
when every missing frame is covered, 1 otherwise.

A fault kind is a class with ``venue_items`` (spec items for the venue, fixed at start) and/or
``act`` (a timed action); adding one is adding a class to ``FAULTS``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from storage.archive_verify import verify_file  # noqa: E402
from storage.layout import iter_segments  # noqa: E402
from tools.venue.coverage import check_coverage  # noqa: E402

MIB = 1 << 20
#: documented bounds of the storage side (docs/RUNTIME.md, Memory bound), payload bytes
QUEUE_BYTES = 256 * MIB
LOOP_PENDING_BYTES = 128 * MIB
COMMIT_CHUNK_BYTES = 32 * MIB


@dataclass
class Ctx:
    """What the timed faults act on."""

    tmp: Path
    root: Path
    disk: Path | None  # the tmpfs mount holding the root, when one could be mounted
    sim_urls: dict[str, str]
    sets: list[str]
    rng: random.Random
    daemon: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    runs: int = 0
    kills: int = 0
    full_disks: int = 0
    terms: list[float] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    peak_rss: int = 0
    base_rss: int = 0
    events: list[str] = field(default_factory=list)

    def start_daemon(self) -> None:
        self.runs += 1
        self.log_path = self.tmp / f"daemon-{self.runs}.log"
        cmd = [sys.executable, "-m", "logger", "run", "--ws-url", self.sim_urls["ws_url"],
               "--rest-url", self.sim_urls["rest_url"], "--data-dir", str(self.root),
               "--metrics-port", "0", "--set", "log.format=text"]
        for s in self.sets:
            cmd += ["--set", s]
        with open(self.log_path, "wb") as log:
            self.daemon = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL,
                                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    def wait_logged(self, needle: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.log_path is not None and self.daemon is not None
            if needle in self.log_path.read_text(errors="replace"):
                return True
            if self.daemon.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def terminate(self) -> None:
        """SIGTERM, timed until the process is gone."""
        assert self.daemon is not None
        t0 = time.monotonic()
        self.daemon.send_signal(signal.SIGTERM)
        try:
            code = self.daemon.wait(120)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            code = self.daemon.wait()
            self.events.append("daemon did not stop within 120 s of SIGTERM: killed")
        self.terms.append(time.monotonic() - t0)
        self.exit_codes.append(code)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _sample_rss(ctx: Ctx, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        d = ctx.daemon
        if d is not None and d.poll() is None:
            ctx.peak_rss = max(ctx.peak_rss, _rss(d.pid))


# -- fault kinds ---------------------------------------------------------------------------

class Fault:
    """A kind of fault: spec items for the venue and/or a timed action."""

    name = "fault"
    timed = False

    def venue_items(self, rng: random.Random, conns: int) -> list[str]:
        return []

    def act(self, ctx: Ctx) -> None:
        raise NotImplementedError(self.name)


class DisconnectStorm(Fault):
    """Connections closed by the venue (close frames with odd codes, TCP resets), several
    in quick succession on some connection ids."""

    name = "disconnect_storm"

    def venue_items(self, rng: random.Random, conns: int) -> list[str]:
        items = []
        for c in range(conns):
            if rng.random() < 0.35:
                kind = rng.choice(["abnormal_close", "close:1011", "close:1001"])
                items.append(f"{kind}@c{c}/{rng.randrange(300, 6000)}")
        return items


class SeqGap(Fault):
    """Sequence numbers the venue skips: GAP markers, no frame missing from the ledger."""

    name = "seq_gap"

    def venue_items(self, rng: random.Random, conns: int) -> list[str]:
        return [f"seq_skip:{rng.randrange(1, 5)}@c{c}/{rng.randrange(100, 5000)}"
                for c in range(conns) if rng.random() < 0.3]


class Kill9(Fault):
    """``kill -9`` of the daemon, restarted after a short pause."""

    name = "kill9"
    timed = True

    def act(self, ctx: Ctx) -> None:
        assert ctx.daemon is not None
        ctx.daemon.kill()
        ctx.daemon.wait()
        ctx.kills += 1
        time.sleep(ctx.rng.uniform(0.2, 2.0))
        ctx.start_daemon()
        ctx.wait_logged("event=all_acknowledged", 60)


class TermRestart(Fault):
    """SIGTERM (timed to exit) and a restart."""

    name = "term_restart"
    timed = True

    def act(self, ctx: Ctx) -> None:
        ctx.terminate()
        time.sleep(ctx.rng.uniform(0.2, 1.0))
        ctx.start_daemon()
        ctx.wait_logged("event=all_acknowledged", 60)


class FullDisk(Fault):
    """The data root's tmpfs filled up with a ballast file for a few seconds, then freed;
    sometimes the daemon is stopped (SIGTERM) while the disk is full."""

    name = "full_disk"
    timed = True

    def act(self, ctx: Ctx) -> None:
        if ctx.disk is None:
            return
        ballast = ctx.disk / "ballast"
        _fill(ballast, leave=256 << 10)
        ctx.full_disks += 1
        time.sleep(ctx.rng.uniform(3.0, 8.0))
        stop_while_full = ctx.rng.random() < 0.4
        if stop_while_full:
            ctx.terminate()
        ballast.unlink()
        if stop_while_full:
            ctx.start_daemon()
            ctx.wait_logged("event=all_acknowledged", 60)


def _fill(ballast: Path, leave: int) -> None:
    """Take all but ``leave`` bytes of the filesystem with a preallocated file (no memory)."""
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(64):
            st = os.statvfs(ballast.parent)
            size = st.f_bavail * st.f_frsize - leave
            if size <= 0:
                return
            try:
                os.posix_fallocate(fd, os.fstat(fd).st_size, size)
                return
            except OSError:  # the daemon wrote meanwhile: try again with what is left
                continue
    finally:
        os.close(fd)


class PingFlood(Fault):
    """A venue that pings as fast as the socket takes them and does not read the pongs: the
    daemon's bounded outgoing buffer drops the connection (DISCONNECT with the reason)."""

    name = "ping_flood"

    def venue_items(self, rng: random.Random, conns: int) -> list[str]:
        return [f"ping_flood:{rng.uniform(2.0, 6.0):.1f}@c{c}/{rng.randrange(500, 6000)}"
                for c in range(conns) if rng.random() < 0.3]


class SlowRest(Fault):
    """Every second or third product-list request trickled a byte at a time: discovery at a
    (re)start is abandoned at its deadline and tried again, never hung."""

    name = "slow_rest"

    def venue_items(self, rng: random.Random, conns: int) -> list[str]:
        return [f"slow_rest:{rng.choice([2.0, 4.0])}@*{rng.choice([2, 3])}"]


FAULTS: dict[str, Fault] = {f.name: f for f in (
    DisconnectStorm(), SeqGap(), PingFlood(), SlowRest(), Kill9(), TermRestart(), FullDisk())}


# -- the run -------------------------------------------------------------------------------

def _mount_tmpfs(path: Path, size: str) -> str | None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "needs root and mount(8)"
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True, text=True)
    return None if out.returncode == 0 else out.stderr.strip()


def _start_sim(tmp: Path, args: argparse.Namespace, items: list[str]) -> tuple[
        subprocess.Popen[bytes], dict[str, str], Path]:
    ledger = tmp / "ledger.jsonl"
    cmd = [sys.executable, "-m", "tools.venue", "serve", "--products", str(args.products),
           "--rate", str(args.rate), "--seed", str(args.seed), "--ledger", str(ledger)]
    if items:
        cmd += ["--faults", ",".join(items)]
    sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert sim.stdout is not None
    line = sim.stdout.readline()
    if not line:
        sim.kill()
        raise SystemExit("chaos: the simulator did not start")
    return sim, json.loads(line), ledger


def run(args: argparse.Namespace) -> dict[str, object]:
    """The whole run in a fresh temporary directory (its tmpfs unmounted whatever happens)."""
    tmp = Path(tempfile.mkdtemp(prefix="cbl-chaos-"))
    disk = tmp / "disk"
    disk.mkdir()
    try:
        return _run(args, tmp, disk)
    finally:
        if os.path.ismount(disk) and not args.keep:
            subprocess.run(["umount", "-l", str(disk)], check=False)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace, tmp: Path, mount_at: Path) -> dict[str, object]:
    rng = random.Random(args.seed)
    kinds = [FAULTS[k] for k in args.faults.split(",")]
    items = [i for f in kinds for i in f.venue_items(rng, args.conns)]
    timed = [f for f in kinds if f.timed]
    disk: Path | None = mount_at
    why = _mount_tmpfs(mount_at, args.tmpfs) if "full_disk" in args.faults else "not asked for"
    if why is not None:
        print(f"chaos: full disk disabled ({why})", file=sys.stderr)
        disk = None
    root = (disk or tmp) / "data"
    backlog = args.backlog_mib * MIB
    sets = [f"storage.max_backlog_bytes={backlog}", "storage.shutdown_retry_s=2",
            "connections.backoff_max_s=2"]
    sim, urls, ledger = _start_sim(tmp, args, items)
    ctx = Ctx(tmp, root, disk, urls, sets, rng)
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(ctx, stop), daemon=True)
    try:
        ctx.start_daemon()
        if not ctx.wait_logged("event=all_acknowledged", 60):
            log = ctx.log_path.read_text() if ctx.log_path else ""
            raise SystemExit("chaos: the daemon did not start:\n" + log)
        time.sleep(1.0)
        assert ctx.daemon is not None
        ctx.base_rss = _rss(ctx.daemon.pid)
        sampler.start()
        end = time.monotonic() + args.seconds
        order = rng.sample(timed, len(timed))  # every timed kind in turn, in a seeded order
        while time.monotonic() < end - 3:
            time.sleep(min(rng.uniform(0.5, 2.0) * args.interval,
                           max(0.0, end - 3 - time.monotonic())))
            if time.monotonic() >= end - 3 or not timed:
                break
            fault = order[len(ctx.events) % len(order)]
            ctx.events.append(f"{time.monotonic() - end + args.seconds:6.1f}s {fault.name}")
            fault.act(ctx)
        time.sleep(max(0.0, end - time.monotonic()))
        ctx.terminate()
    finally:
        stop.set()
        if ctx.daemon is not None and ctx.daemon.poll() is None:
            ctx.daemon.kill()
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(60)
        except subprocess.TimeoutExpired:
            sim.kill()
    cov = check_coverage(ledger, root)
    reports = [verify_file(ref.path) for ref in iter_segments(root)]
    bound = ctx.base_rss + int((QUEUE_BYTES + LOOP_PENDING_BYTES + backlog) * 1.25) \
        + 2 * COMMIT_CHUNK_BYTES
    result: dict[str, object] = {
        "seconds": args.seconds, "seed": args.seed, "faults": args.faults,
        "venue_fault_items": len(items), "runs": ctx.runs, "kills": ctx.kills,
        "full_disks": ctx.full_disks, "mount_refused": int(disk is None),
        "sigterms": len(ctx.terms),
        "exit_codes": ctx.exit_codes,
        "sent": cov.sent, "stored": cov.stored, "missing": cov.missing,
        "missing_inside_markers": cov.covered,
        "covered_share": round(cov.covered_share, 6),
        "markers": cov.markers, "time_backward_steps": cov.backward_steps,
        "verify_problems": sum(len(r.problems) for r in reports),
        "verify_warnings": sum(len(r.warnings) for r in reports),
        "peak_rss_mb": round(ctx.peak_rss / MIB, 1), "base_rss_mb": round(ctx.base_rss / MIB, 1),
        "rss_bound_mb": round(bound / MIB, 1),
        "longest_sigterm_to_exit_s": round(max(ctx.terms, default=0.0), 2),
        "uncovered_examples": [f._asdict() for f in cov.uncovered[:5]],
        "events": ctx.events,
    }
    if args.keep:
        result["kept"] = str(tmp)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--products", type=int, default=20)
    p.add_argument("--rate", type=float, default=2000.0, help="venue messages per second")
    p.add_argument("--interval", type=float, default=8.0,
                   help="mean seconds between timed faults")
    p.add_argument("--faults", default=",".join(FAULTS),
                   help=f"fault kinds, comma-separated, of: {', '.join(FAULTS)}")
    p.add_argument("--conns", type=int, default=120,
                   help="venue connection ids the venue-side faults are spread over")
    p.add_argument("--tmpfs", default="512m", help="size of the tmpfs holding the data root")
    p.add_argument("--backlog-mib", type=int, default=16,
                   help="storage.max_backlog_bytes of the daemon, MiB")
    p.add_argument("--keep", action="store_true",
                   help="keep the data root (its tmpfs stays mounted) and logs")
    args = p.parse_args()
    unknown = set(args.faults.split(",")) - set(FAULTS)
    if unknown:
        p.error(f"unknown fault kind(s): {', '.join(sorted(unknown))}")
    r = run(args)
    print(f"frames sent {r['sent']}, stored {r['stored']}, missing {r['missing']}, "
          f"missing inside markers {r['missing_inside_markers']} "
          f"({100 * float(r['covered_share']):.3f} %)")  # type: ignore[arg-type]
    print(f"kills {r['kills']}, full disks {r['full_disks']}, SIGTERMs {r['sigterms']} "
          f"(exit codes {r['exit_codes']}), daemon runs {r['runs']}")
    print(f"peak RSS {r['peak_rss_mb']} MB vs documented bound {r['rss_bound_mb']} MB "
          f"(base {r['base_rss_mb']} MB); longest SIGTERM-to-exit "
          f"{r['longest_sigterm_to_exit_s']} s; markers {r['markers']}; "
          f"time going back {r['time_backward_steps']}; verify: {r['verify_problems']} "
          f"problem(s), {r['verify_warnings']} warning(s)")
    print(json.dumps(r))
    return 0 if r["missing_inside_markers"] == r["missing"] else 1


if __name__ == "__main__":
    sys.exit(main())

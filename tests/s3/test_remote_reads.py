"""inspect ls/cat/verify/stats and replay on an s3:// root: range requests against SeaweedFS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from archives import make_archive, make_root, rel
from simhelpers import client, read_until_closed

from storage.archive import ArchiveReader
from tools.inspect_cli import main as inspect
from tools.ship_cli import main as ship
from tools.venue.replay import ReplayConfig, ReplayServer


def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = inspect(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def shipped(tmp_path: Path, bucket: str, capfd: pytest.CaptureFixture[str],
            **kw: Any) -> tuple[Path, list[Path], str]:
    root = tmp_path / "data"
    archives = make_root(root, **kw)
    assert ship([str(root), f"s3://{bucket}/box"]) == 0
    capfd.readouterr()
    return root, archives, f"s3://{bucket}/box"


def test_ls_remote_lists_what_local_ls_lists(tmp_path: Path, bucket: str,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    root, archives, url = shipped(tmp_path, bucket, capfd)
    code, out, err = run(capfd, "ls", url, "--json")
    assert code == 0, err
    remote = [orjson.loads(line) for line in out.splitlines()]
    code, out, _ = run(capfd, "ls", str(root), "--json")
    local = [orjson.loads(line) for line in out.splitlines()]
    assert len(remote) == len(archives) == len(local)
    for r, lo in zip(remote, local, strict=True):
        assert r["path"] == f"s3://{bucket}/box/" + rel(root, Path(lo["path"]))
        for field in ("product", "channel", "day", "records", "disk_bytes", "markers", "state"):
            assert r[field] == lo[field]
    code, out, _ = run(capfd, "ls", url + "/ETH-USD")  # a product prefix, like a folder
    assert code == 0 and "BTC-USD" not in out and out.count("ETH-USD/level2") == 2


def test_cat_from_to_fetches_only_the_frames_it_needs(
        tmp_path: Path, bucket: str, client: Any, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    arch = make_archive(root, n=150_000, per_batch=1_000, markers_every=5_000)
    assert ship([str(root), f"s3://{bucket}"]) == 0
    capfd.readouterr()
    size = arch.stat().st_size
    with ArchiveReader.open(arch) as reader:
        frames = reader.data_frames
        assert len(frames) >= 20
        lo, hi = frames[10].min_ts_ns + 1, frames[10].max_ts_ns - 1
    url = f"s3://{bucket}/{rel(root, arch)}"
    code, out, err = run(capfd, "cat", url, "--from", str(lo), "--to", str(hi),
                         "--format", "jsonl", "--io-stats")
    assert code == 0, err
    fetched = int(err.split("; ")[1].split()[0])
    assert 0 < fetched < size * 0.08, (fetched, size)  # one data frame + table + header
    _, local_out, _ = run(capfd, "cat", str(arch), "--from", str(lo), "--to", str(hi),
                          "--format", "jsonl")
    strip = [orjson.loads(x) | {"path": None} for x in out.splitlines()]
    assert strip == [orjson.loads(x) | {"path": None} for x in local_out.splitlines()]
    assert len(strip) > 1000
    # markers only: the seek table's counts pick the frames holding a GAP
    code, out, err = run(capfd, "cat", url, "--markers-only", "--io-stats")
    assert code == 0 and out.count("# GAP") == 30


def test_verify_remote_clean_then_damage_found(tmp_path: Path, bucket: str, client: Any,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    root, archives, url = shipped(tmp_path, bucket, capfd, days=1)
    code, out, err = run(capfd, "verify", url)
    assert code == 0 and out == "" and "verified 2 file(s), 6000 records: clean" in err
    key = f"box/{rel(root, archives[0])}"
    data = bytearray(archives[0].read_bytes())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    code, out, err = run(capfd, "verify", url)
    assert code == 1 and "1 problem(s) in 1 file(s)" in err
    assert out.startswith(f"s3://{bucket}/{key}@") and "damaged" in out


def test_stats_remote_equals_local(tmp_path: Path, bucket: str,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    root, _, url = shipped(tmp_path, bucket, capfd, days=1)
    code, remote, err = run(capfd, "stats", url, "--json")
    assert code == 0, err
    _, local, _ = run(capfd, "stats", str(root), "--json")
    assert remote == local and remote.count("\n") == 2


def test_remote_errors_are_one_line(tmp_path: Path, bucket: str,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capfd, "ls", f"s3://{bucket}/nothing-here")
    assert code == 2 and "no segment files found" in err and err.count("\n") == 1
    code, _, err = run(capfd, "cat", f"s3://{bucket}/a/b/2026-11-20.0000.seg.zst")
    assert code == 2 and "no such object" in err and err.count("\n") == 1
    code, _, err = run(capfd, "ls", "s3://no-such-bucket-y/x")
    assert code == 1 and "NoSuchBucket" in err and err.count("\n") == 1


def test_replay_serves_a_remote_root(tmp_path: Path, bucket: str,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    root, _, url = shipped(tmp_path, bucket, capfd, days=1)

    async def received(where: Path) -> list[bytes]:
        srv = ReplayServer(ReplayConfig(root=where, speed=None, ledger=False, linger_s=0.1))
        await srv.start()
        try:
            async with client(srv.ws_url) as ws:
                await ws.send(orjson.dumps({"type": "subscribe", "channel": "level2",
                                            "product_ids": ["BTC-USD", "ETH-USD"]}).decode())
                return await read_until_closed(ws, timeout=60)
        finally:
            await srv.stop()

    def data(frames: list[bytes]) -> list[bytes]:
        # replay answers the subscribe with one ack (issue 12), stamped with the current time
        acks = [f for f in frames if orjson.loads(f).get("channel") == "subscriptions"]
        assert len(acks) == 1
        return [f for f in frames if f not in acks]

    local = data(asyncio.run(received(root)))
    remote = data(asyncio.run(received(Path(url))))
    assert len(local) == 6000 and remote == local


def test_a_sequential_scan_reads_ahead_in_few_requests(
        tmp_path: Path, bucket: str, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    arch = make_archive(root, n=80_000, per_batch=1_000)
    assert ship([str(root), f"s3://{bucket}"]) == 0
    capfd.readouterr()
    with ArchiveReader.open(arch) as local:
        want = [(r.ts_ns, r.payload) for r in local.records()]
        frames = len(local.data_frames)
    with ArchiveReader.open(Path(f"s3://{bucket}/{rel(root, arch)}")) as remote:
        got = [(r.ts_ns, r.payload) for r in remote.records()]
        requests = remote._src.reads
        fetched = remote.bytes_read
    assert got == want and frames >= 10
    assert requests <= 3 + frames // 2  # trailer, table, header frame, then doubling reads
    # read-ahead never goes past the end; the seek table is fetched twice at most
    assert fetched <= arch.stat().st_size * 1.1

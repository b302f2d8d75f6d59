"""cbl-ship's decisions without a server: upload, replace, present; retention; key names."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest

from storage.source import parse_s3_url
from tools.ship_core import (
    Action,
    LocalArchive,
    RemoteObject,
    decide,
    object_key,
    retention_due,
    sha256_from_b64,
)

SHA = hashlib.sha256(b"x").hexdigest()
LOCAL = LocalArchive("BTC-USD/level2/2026-11-20.0000.seg.zst", 10, SHA, dt.date(2026, 11, 20))


def test_decide() -> None:
    assert decide(LOCAL, None) is Action.UPLOAD
    assert decide(LOCAL, RemoteObject(10, SHA)) is Action.PRESENT
    assert decide(LOCAL, RemoteObject(11, SHA)) is Action.REPLACE
    assert decide(LOCAL, RemoteObject(10, "0" * 64)) is Action.REPLACE
    assert decide(LOCAL, RemoteObject(10, None)) is Action.REPLACE  # nobody vouches for it


def test_retention_keeps_the_last_n_days() -> None:
    today = dt.date(2026, 11, 23)
    assert retention_due(dt.date(2026, 11, 20), today, None) is False
    assert [retention_due(today - dt.timedelta(days=d), today, 2) for d in range(5)] == [
        False, False, False, True, True]
    assert retention_due(today - dt.timedelta(days=1), today, 0) is True


def test_object_keys_and_urls() -> None:
    assert object_key("box1", LOCAL.rel) == f"box1/{LOCAL.rel}"
    assert object_key("", LOCAL.rel) == LOCAL.rel
    for bad in ("", "/abs", "a/../b", "a//b"):
        with pytest.raises(ValueError):
            object_key("p", bad)
    assert parse_s3_url("s3://b/p/q/").key == "p/q"
    assert parse_s3_url("s3:/b/p").url() == "s3://b/p"  # the Path-folded form
    for bad in ("s3://", "gs://b", "s3://b/a/../c", "s3://b/a//c"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


def test_checksum_forms() -> None:
    digest = hashlib.sha256(b"x").digest()
    assert sha256_from_b64(base64.b64encode(digest).decode()) == SHA
    assert sha256_from_b64(None) is None
    assert sha256_from_b64("abc-3") is None          # a multipart composite checksum
    assert sha256_from_b64("not base64!") is None
    assert sha256_from_b64(base64.b64encode(b"short").decode()) is None

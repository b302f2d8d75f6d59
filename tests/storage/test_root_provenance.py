"""The root's metadata file is storage's: a claim with an opaque dialect and venue, refused
for another dialect, for another venue identity unless allowed, and while the root is held."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import (
    DATA_DIR_META,
    DialectMismatch,
    RootInUse,
    RootLock,
    VenueMismatch,
    claim_root,
    read_meta,
    release_root,
)

FEED = {"address": "feed-a", "mirror": "m1"}


def _claim(root: Path, dialect: str = "d1", venue: dict[str, str] = FEED,
           allow: bool = False) -> int:
    return claim_root(root, dialect, venue, identity="address", run={"tool": "t"},
                      allow_venue_change=allow).unclean_stops


def test_a_claim_records_the_opaque_venue_and_the_run(tmp_path: Path) -> None:
    assert _claim(tmp_path) == 0
    meta = read_meta(tmp_path)
    assert meta is not None and (tmp_path / DATA_DIR_META).is_file()
    assert meta["dialect"] == "d1" and meta["venue"] == FEED
    assert meta["running"]["tool"] == "t" and meta["runs"] == [meta["running"]]
    release_root(tmp_path)
    assert "running" not in (read_meta(tmp_path) or {})


def test_identity_decides_a_venue_change_and_dialects_never_mix(tmp_path: Path) -> None:
    _claim(tmp_path)
    release_root(tmp_path)
    _claim(tmp_path, venue={"address": "feed-a", "mirror": "m2"})  # same identity: fine
    release_root(tmp_path)
    with pytest.raises(VenueMismatch, match=r"'feed-a'.*'feed-b'"):
        _claim(tmp_path, venue={"address": "feed-b"})
    _claim(tmp_path, venue={"address": "feed-b"}, allow=True)
    release_root(tmp_path)
    with pytest.raises(DialectMismatch, match="holds dialect 'd1'"):
        _claim(tmp_path, dialect="d2", allow=True)


def test_a_held_root_is_refused_and_an_unfinished_run_counted(tmp_path: Path) -> None:
    _claim(tmp_path)
    with RootLock(tmp_path), pytest.raises(RootInUse):
        _claim(tmp_path)
    assert _claim(tmp_path) == 1  # the first run never released: an unclean stop

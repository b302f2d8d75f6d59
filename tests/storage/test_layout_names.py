"""Stream names become path components: only a strict whitelist passes, nothing escapes root."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from storage.layout import (
    InvalidStreamName,
    iter_segments,
    parse_segment_path,
    segment_path,
    validate_name,
)

DAY = dt.date(2026, 11, 24)

HOSTILE = [
    "", ".", "..", "../etc", "a/b", "/abs", "BTC\0USD", "BTC-ÜSD", "x" * 65, ".hidden",
    "a..b", "BTC USD", "BTC\nUSD", "€", "con\\x", "a/../../b",
]


@pytest.mark.parametrize("name", ["BTC-USD", "ETH-EUR", "_multi", "_conn3", "a.b", "X" * 64,
                                  "level2", "ticker_batch", "1INCH-USD"])
def test_valid_names_pass_unchanged(name: str) -> None:
    assert validate_name(name, "product") == name


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_rejected_with_the_value_named(name: str) -> None:
    with pytest.raises(InvalidStreamName) as e:
        validate_name(name, "product")
    assert "product" in str(e.value)
    assert repr(name) in str(e.value)
    assert isinstance(e.value, ValueError)


def test_non_str_is_rejected() -> None:
    with pytest.raises(InvalidStreamName):
        validate_name(b"BTC-USD", "product")  # type: ignore[arg-type]


def test_segment_path_scheme(tmp_path: Path) -> None:
    p = segment_path(tmp_path, "BTC-USD", "level2", DAY, 7)
    assert p == tmp_path / "BTC-USD" / "level2" / "2026-11-24.0007.seg"
    with pytest.raises(InvalidStreamName):
        segment_path(tmp_path, "../x", "level2", DAY, 0)
    with pytest.raises(ValueError, match="segment number"):
        segment_path(tmp_path, "BTC-USD", "level2", DAY, 10_000)


def test_parse_round_trips_and_rejects_foreign(tmp_path: Path) -> None:
    p = segment_path(tmp_path, "BTC-USD", "level2", DAY, 12)
    ref = parse_segment_path(p)
    assert (ref.product, ref.channel, ref.day, ref.number, ref.archived) == (
        "BTC-USD", "level2", DAY, 12, False)
    z = parse_segment_path(p.with_name(p.name + ".zst"))
    assert z.archived and z.number == 12
    for bad in ("2026-11-24.12.seg", "2026-13-01.0000.seg", "x.seg", "2026-11-24.0000.seg.tmp"):
        with pytest.raises(ValueError):
            parse_segment_path(tmp_path / "BTC-USD" / "level2" / bad)
    with pytest.raises(ValueError):
        parse_segment_path(tmp_path / "BTC USD" / "level2" / "2026-11-24.0000.seg")


def test_iter_segments_sorts_filters_and_skips_foreign_files(tmp_path: Path) -> None:
    made = [
        segment_path(tmp_path, "ETH-USD", "ticker", DAY, 0),
        segment_path(tmp_path, "BTC-USD", "level2", DAY, 1),
        segment_path(tmp_path, "BTC-USD", "level2", DAY, 0),
        segment_path(tmp_path, "BTC-USD", "level2", DAY - dt.timedelta(days=1), 0),
    ]
    for p in made:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    archived = made[3].with_name(made[3].name + ".zst")
    archived.write_bytes(b"")
    (made[1].parent / "2026-11-24.0002.seg.tmp").write_bytes(b"")
    (made[1].parent / "notes.txt").write_bytes(b"")
    (tmp_path / ".lock").write_bytes(b"")
    refs = list(iter_segments(tmp_path))
    assert [(r.product, r.day, r.number, r.archived) for r in refs] == [
        ("BTC-USD", DAY - dt.timedelta(days=1), 0, False),
        ("BTC-USD", DAY - dt.timedelta(days=1), 0, True),
        ("BTC-USD", DAY, 0, False),
        ("BTC-USD", DAY, 1, False),
        ("ETH-USD", DAY, 0, False),
    ]
    assert [r.number for r in iter_segments(tmp_path, "BTC-USD", "level2", DAY)] == [0, 1]
    assert list(iter_segments(tmp_path, product="SOL-USD")) == []
    assert list(iter_segments(tmp_path / "missing")) == []
    with pytest.raises(InvalidStreamName):
        list(iter_segments(tmp_path, product="../etc"))

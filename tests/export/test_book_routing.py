"""The production rebuild (export, `inspect book`, `inspect integrity`) hands whole messages to
`BookTracker.message` (compiled where built), and its outputs are byte for byte those of the
level-by-level feeding it replaced (`begin`, `level`... `end`), broken frames included: levels
before a bad one applied, a snapshot that broke off ended by the next message, the same
malformed counts and markers."""

from __future__ import annotations

import gzip
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from exportdata import write_root

from tools.export_cli import main as export_main
from tools.inspect_cli import main as inspect_main
from tools.normalize import book
from tools.normalize.book import BookTracker
from tools.normalize.integrity import integrity
from tools.venue.generator import DEFAULT_START_NS, MarketModel


def _faults(p: str) -> list[tuple[int, bytes]]:
    """Markers and broken book frames of both dialects: each way a frame can break off."""
    def at(typ: str, ups: list[object], **kw: object) -> bytes:
        return json.dumps({"channel": "l2_data", "timestamp": "2024-01-01T00:00:00Z",
                           "sequence_num": 5, "events": [
                               {"type": typ, "product_id": p, "updates": ups}]}).encode()

    def u(s: str, pr: object, q: object, et: object = "2024-01-01T00:00:00.1Z") -> object:
        return {"side": s, "event_time": et, "price_level": pr, "new_quantity": q}

    def ex(**kw: object) -> bytes:
        return json.dumps({"product_id": p, "time": "2024-01-01T00:00:00Z", **kw}).encode()

    return [
        (1, b'{"gap": 1}'), (0, b"not json"),
        (0, at("update", [u("bid", "1.5", "2"), {"price_level": "1"}, u("ask", "9", "1")])),
        (0, at("update", [u("bid", "1.25", "2"), u("bid", "abc", "1"), u("ask", "9", "1")])),
        (0, at("update", [u("bid", "1.75", "2"), u("bid", "2", "x")])),
        (0, at("update", [u("bid", "1.8", "2"), u("bid", "2", "1", et=5)])),
        (0, at("update", [u("bid", "1.9", "2"), u("bid", "2", "1", et="1970-01-01T00:00:00Z")])),
        (0, at("snapshot", [u("bid", "1.0", "2"), u("ask", "3.0", "1"), u("ask", "bad", "1")])),
        (0, at("update", [u("bid", "1.1", "2")])),
        (0, at("update", [u("bid", "100000", "2"), u("ask", "0.0001", "1")])),
        (0, json.dumps({"channel": "l2_data", "events": [
            {"type": "update", "product_id": p}]}).encode()),
        (0, at("update", 5)),  # type: ignore[arg-type]
        (0, ex(type="l2update", changes=[["buy", "1", "1"], ["sell", "2"]])),
        (0, ex(type="l2update", changes=[["buy", "1", "1"], ["sell", None, "1"]])),
        (0, ex(type="snapshot", bids=[["1", "1"]])),
        (0, ex(type="snapshot", bids=[["1", "1"]], asks=[["2", "x"]])),
        (0, ex(type="l2update", changes=[["buy", "1.5", "1"]])),
        (4, b'{"subscribe": 1}'), (2, b'{"disconnect": 1}'),
    ]


def _root(root: Path, dialect: str, n: int = 3_000) -> tuple[Path, str]:
    model = MarketModel(seed=7, products=2, dialect=dialect)  # type: ignore[arg-type]
    recs: list[tuple[str, str, int, int, bytes]] = []
    first: tuple[str, str] | None = None
    for i, (p, c, raw) in enumerate(model.day_of_messages(n)):
        ts = DEFAULT_START_NS + i * 500_000
        recs.append((p, c, ts, 0, raw))
        if first is None and c.startswith("level2"):
            first = (p, c)
        if first is not None and p == first[0] and i % 60 == 59:
            faults = _faults(first[0])
            kind, payload = faults[(i // 60) % len(faults)]
            recs.append((first[0], first[1], ts + 1, kind, payload))
    assert first is not None
    return write_root(root, recs), first[0]


def _level_by_level(tr: BookTracker, ts: int, is_snapshot: bool,
                    levels: list[tuple[bool, str, str]]) -> None:
    """How the production path fed the book before it went message by message."""
    tr.begin(ts, is_snapshot)
    for is_bid, price, size in levels:
        tr.level(is_bid, price, size)
    tr.end(ts)


def _outputs(root: Path, out: Path, product: str) -> dict[str, bytes | str]:
    got: dict[str, bytes | str] = {}
    for name, args in {"all": [], "change": ["--on-change", "--depth", "5"],
                       "l2": ["-d", "book_l2,markers,quotes", "--format", "csv"]}.items():
        assert export_main([str(root), "-o", str(out / name), "-q", *args]) == 0
        for f in sorted((out / name).rglob("*")):
            if f.is_file() and "_export" not in f.parts:  # state files hold the run's time
                data = f.read_bytes()
                got[str(f.relative_to(out))] = gzip.decompress(data) if f.suffix == ".gz" \
                    else data
    got["integrity"] = json.dumps(list(integrity(root)))
    for k in range(0, 1_500, 61):
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = inspect_main(["book", str(root), "-p", product, "--json",
                               "--at", str(DEFAULT_START_NS + k * 1_000_000 + 1)])
        got[f"book{k}"] = f"{rc} {buf.getvalue()}"
    return got


@pytest.mark.parametrize("dialect", ["advanced_trade", "exchange"])
@pytest.mark.parametrize("compiled", [True, False])
def test_outputs_equal_the_level_by_level_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dialect: str, compiled: bool) -> None:
    if compiled and book.native_message is None:
        pytest.skip("compiled book not built (or CBL_PURE set)")
    if not compiled:
        monkeypatch.setattr(book, "native_message", None)
    root, product = _root(tmp_path / "data", dialect)
    new = _outputs(root, tmp_path / "new", product)
    monkeypatch.setattr(BookTracker, "apply", _level_by_level)
    old = _outputs(root, tmp_path / "old", product)
    assert new.keys() == old.keys()
    assert [k for k in new if new[k] != old[k]] == []
    assert sum(r["malformed"] for r in json.loads(new["integrity"])) > 5  # faults were met
    assert any('"valid":true' in str(v) for k, v in new.items() if k.startswith("book"))


def test_clean_data_goes_message_by_message(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """No level-by-level call on the production path when every frame is whole."""
    model = MarketModel(seed=7, products=2, dialect="advanced_trade")
    root = write_root(tmp_path / "data", [
        (p, c, DEFAULT_START_NS + i * 500_000, 0, raw)
        for i, (p, c, raw) in enumerate(model.day_of_messages(2_000))])

    def refuse(*args: object) -> None:
        raise AssertionError("level-by-level call on the production path")

    monkeypatch.setattr(BookTracker, "level", refuse)
    monkeypatch.setattr(BookTracker, "begin", refuse)
    reports = list(integrity(root))
    assert sum(r["levels"] for r in reports) > 0
    assert export_main([str(root), "-o", str(tmp_path / "out"), "-q"]) == 0

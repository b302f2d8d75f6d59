"""REST product lists of both dialects: filtering, alias de-dup, diff, and the HTTP fetch."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any, ClassVar

import orjson
import pytest
from trickle import TrickleServer

from logger.httpget import HttpError, parse_head
from logger.products import (
    Product,
    ProductsError,
    diff_products,
    fetch_products,
    parse_products,
    select_products,
)


def at_item(pid: str, **extra: Any) -> dict[str, Any]:
    base, _, quote = pid.partition("-")
    item = {"product_id": pid, "price": "10", "volume_24h": "5", "status": "online",
            "trading_disabled": False, "is_disabled": False, "view_only": False,
            "alias": "", "alias_to": [], "base_currency_id": base, "quote_currency_id": quote,
            "approximate_quote_24h_volume": "1234.5", "product_type": "SPOT"}
    item.update(extra)
    return item


def ex_item(pid: str, **extra: Any) -> dict[str, Any]:
    base, _, quote = pid.partition("-")
    item = {"id": pid, "base_currency": base, "quote_currency": quote, "status": "online",
            "trading_disabled": False, "cancel_only": False}
    item.update(extra)
    return item


def test_advanced_trade_keeps_online_enabled_products_and_drops_aliases() -> None:
    payload = orjson.dumps({"products": [
        at_item("BTC-USD", alias_to=["BTC-USDC"]),
        at_item("BTC-USDC", alias="BTC-USD"),
        at_item("USDT-USDC"),
        at_item("ETH-USD", approximate_quote_24h_volume="", volume_24h="3", price="2"),
        at_item("OLD-USD", status="delisted"),
        at_item("OFF-USD", trading_disabled=True),
        at_item("DIS-USD", is_disabled=True),
        at_item("VIEW-USD", view_only=True),
        at_item("../evil"),
        at_item("_conn0"),
        {"product_id": 5},
        "junk",
    ], "num_products": 12})
    products = parse_products(payload, "advanced_trade")
    assert [p.product_id for p in products] == ["BTC-USD", "ETH-USD", "USDT-USDC"]
    assert products[0] == Product("BTC-USD", "BTC", "USD", 1234.5)
    assert products[1].volume_24h == 6.0


def test_alias_of_an_unlisted_or_unrecorded_product_is_kept() -> None:
    payload = {"products": [at_item("SOL-USDC", alias="SOL-USD"),
                            at_item("ADA-USDC", alias="ADA-USD"),
                            at_item("ADA-USD", status="offline")]}
    assert [p.product_id for p in parse_products(payload, "advanced_trade")] == [
        "ADA-USDC", "SOL-USDC"]


def test_exchange_keeps_online_enabled_products() -> None:
    payload = orjson.dumps([ex_item("BTC-USD"), ex_item("ETH-EUR"),
                            ex_item("YFI-USD", status="delisted"),
                            ex_item("OFF-USD", trading_disabled=True), ex_item("a..b"), 7])
    assert [p.product_id for p in parse_products(payload, "exchange")] == ["BTC-USD", "ETH-EUR"]


@pytest.mark.parametrize(("payload", "dialect"), [
    (b"<html>", "advanced_trade"), (b"[]", "advanced_trade"), (b'{"products": 3}',
                                                               "advanced_trade"),
    (b'{"products": []}', "exchange"), (b"nope", "exchange"),
])
def test_wrong_shapes_are_clear_errors(payload: bytes, dialect: str) -> None:
    with pytest.raises(ProductsError):
        parse_products(payload, dialect)


def test_select_and_diff() -> None:
    available = [Product(p, "", "", 0.0) for p in ("A-USD", "B-USD", "C-USD")]
    assert [p.product_id for p in select_products(available, "all", ["B-USD"])] == [
        "A-USD", "C-USD"]
    assert [p.product_id for p in select_products(available, ["C-USD", "Z-USD", "A-USD"])] == [
        "C-USD", "A-USD"]
    assert diff_products(["A", "B", "C"], ["B", "C", "D", "E"]) == (("D", "E"), ("A",))
    assert diff_products(["A"], ["A"]) == ((), ())


class _Handler(http.server.BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, bytes]] = {}
    status: ClassVar[int] = 200

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        offset = query.get("offset", ["0"])[0]
        body = self.pages.get(offset, b"{}")
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"pages": {}, "status": 200})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/products?limit=2", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _fetch(url: str, dialect: str, timeout: float) -> list[Product]:
    return asyncio.run(fetch_products(url, dialect, timeout))


def test_fetch_follows_advanced_trade_pages(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    handler.pages = {
        "0": orjson.dumps({"products": [at_item("A-USD"), at_item("B-USD")],
                           "pagination": {"has_next": True}}),
        "2": orjson.dumps({"products": [at_item("C-USD")], "pagination": {"has_next": False}}),
    }
    assert [p.product_id for p in _fetch(url, "advanced_trade", 5)] == [
        "A-USD", "B-USD", "C-USD"]


def test_fetch_exchange(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    handler.pages = {"0": orjson.dumps([ex_item("A-USD")])}
    assert [p.product_id for p in _fetch(url, "exchange", 5)] == ["A-USD"]


def test_fetch_errors_name_the_url_and_cause(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    handler.status = 503
    with pytest.raises(ProductsError, match=r"HTTP 503"):
        _fetch(url, "exchange", 5)
    handler.status = 200
    handler.pages = {"0": b"not json"}
    with pytest.raises(ProductsError, match="not JSON"):
        _fetch(url, "exchange", 5)
    with pytest.raises(ProductsError, match="not an http"):
        _fetch("ftp://127.0.0.1/x", "exchange", 5)


def test_fetch_connection_refused_is_a_products_error() -> None:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProductsError, match=f"127.0.0.1:{port}"):
        _fetch(f"http://127.0.0.1:{port}/products", "exchange", 2)


def test_a_trickling_server_is_abandoned_at_the_overall_deadline() -> None:
    """One byte a second never trips a per-read timeout; the overall deadline does."""
    with TrickleServer(interval_s=0.3) as srv:
        t0 = time.monotonic()
        with pytest.raises(ProductsError, match=r"no complete .* within 1\.5 s"):
            _fetch(srv.url, "advanced_trade", 1.5)
        assert 1.4 < time.monotonic() - t0 < 3.0


def test_a_fetch_is_cancelled_at_once() -> None:
    async def go() -> float:
        with TrickleServer(interval_s=0.3) as srv:
            task = asyncio.create_task(fetch_products(srv.url, "advanced_trade", 60))
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.monotonic() - t0

    assert asyncio.run(go()) < 0.5


def _one_shot(answer: bytes) -> str:
    """A raw server that answers one request with ``answer`` and closes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}/products"


def test_chunked_and_close_delimited_bodies() -> None:
    body = orjson.dumps([ex_item("A-USD"), ex_item("B-USD")])
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                       for i in range(0, len(body), 7)) + b"0\r\n\r\n"
    url = _one_shot(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    assert [p.product_id for p in _fetch(url, "exchange", 5)] == ["A-USD", "B-USD"]
    url = _one_shot(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)
    assert [p.product_id for p in _fetch(url, "exchange", 5)] == ["A-USD", "B-USD"]


def test_broken_responses_are_one_line_errors() -> None:
    url = _one_shot(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ProductsError, match=r"not an HTTP/1\.x response"):
        _fetch(url, "exchange", 5)
    url = _one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[]")
    with pytest.raises(ProductsError, match="closed in the middle"):
        _fetch(url, "exchange", 5)
    url = _one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (65 << 20))
    with pytest.raises(ProductsError, match="larger than"):
        _fetch(url, "exchange", 5)


def test_parse_head() -> None:
    head = parse_head(b"HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nX-A:  b ")
    assert (head.status, head.reason, head.headers) == (301, "Moved Permanently",
                                                        {"location": "/x", "x-a": "b"})
    with pytest.raises(HttpError, match="bad response header"):
        parse_head(b"HTTP/1.1 200 OK\r\nno colon here")


def test_a_redirect_is_followed_within_the_same_deadline() -> None:
    body = orjson.dumps([ex_item("A-USD")])
    target = _one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    url = _one_shot(b"HTTP/1.1 301 Moved Permanently\r\nLocation: %s\r\n\r\n" % target.encode())
    assert [p.product_id for p in _fetch(url, "exchange", 5)] == ["A-USD"]
    loop_url = _one_shot(b"HTTP/1.1 302 Found\r\nLocation: ftp://x/\r\n\r\n")
    with pytest.raises(ProductsError, match="not an http"):
        _fetch(loop_url, "exchange", 5)

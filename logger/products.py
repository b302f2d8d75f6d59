"""Product discovery: parse the venue's REST product list, keep what can be recorded, diff it.

Parsing is pure (bytes in, ``Product`` list out) so it is tested without a network; the fetch
runs on the event loop (``logger.httpget``) under one deadline for all its pages. A product is
kept when it is online and not disabled (``trading_disabled``, ``is_disabled``,
``view_only`` on Advanced Trade), has an id that can name a storage stream, and is not an
alias of another kept product (Advanced Trade lists e.g. ``BTC-USDC`` as an alias of
``BTC-USD``: the public channels send the same data for both, so recording both would store
everything twice).
"""

from __future__ import annotations

import asyncio
import logging
import math
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from logger.httpget import HttpError, http_get
from logger.protocol.names import is_valid_product_id

log = logging.getLogger("logger.products")

MAX_PAGES = 100
"""Most pages followed on a paginated Advanced Trade product list (bounds a broken server)."""

MAX_BODY_BYTES = 64 << 20
"""Largest REST response read (a few hundred products are about 1 MB)."""


class ProductsError(Exception):
    """The product list could not be fetched or is not a product list of the dialect."""


@dataclass(frozen=True, slots=True)
class Product:
    """One recordable product."""

    product_id: str
    base: str
    quote: str
    volume_24h: float
    """Approximate 24 h volume in the quote currency (0 if unknown): the sharding weight."""


class ProductsDiff(NamedTuple):
    """What a refresh changes: ids newly listed and ids gone (delisted or disabled)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]


def _number(value: object) -> float:
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return 0.0
        return number if math.isfinite(number) else 0.0
    return 0.0


def _flag(item: Mapping[str, Any], *keys: str) -> bool:
    return any(item.get(k) is True for k in keys)


def _decode(payload: bytes | str | object) -> object:
    if isinstance(payload, bytes | str):
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise ProductsError(f"product list is not JSON: {exc}") from None
    return payload


def _valid(product_id: object, skipped: list[str]) -> str | None:
    if not isinstance(product_id, str):
        skipped.append(repr(product_id))
        return None
    if not is_valid_product_id(product_id):
        skipped.append(product_id)
        return None
    return product_id


def parse_advanced_trade(payload: bytes | str | object) -> list[Product]:
    """Products of an Advanced Trade ``{"products": [...]}`` list, recordable ones only."""
    data = _decode(payload)
    if not isinstance(data, dict) or not isinstance(data.get("products"), list):
        raise ProductsError('Advanced Trade product list: expected {"products": [...]}')
    items = [i for i in data["products"] if isinstance(i, dict)]
    skipped: list[str] = []
    out: dict[str, Product] = {}
    aliases: dict[str, str] = {}
    for item in items:
        pid = _valid(item.get("product_id"), skipped)
        if pid is None or str(item.get("status", "")).lower() != "online":
            continue
        if _flag(item, "trading_disabled", "is_disabled", "view_only"):
            continue
        alias = item.get("alias")
        if isinstance(alias, str) and alias and alias != pid:
            aliases[pid] = alias
        volume = _number(item.get("approximate_quote_24h_volume"))
        if not volume:
            volume = _number(item.get("volume_24h")) * _number(item.get("price"))
        out.setdefault(pid, Product(pid, str(item.get("base_currency_id") or
                                              item.get("base_name") or ""),
                                    str(item.get("quote_currency_id") or
                                        item.get("quote_name") or ""), volume))
    for pid, alias in aliases.items():
        if alias in out:  # same public data as `alias`, which is recorded
            del out[pid]
    _log_skipped(skipped)
    return sorted(out.values(), key=lambda p: p.product_id)


def parse_exchange(payload: bytes | str | object) -> list[Product]:
    """Products of an Exchange ``/products`` JSON array, recordable ones only."""
    data = _decode(payload)
    if not isinstance(data, list):
        raise ProductsError("Exchange product list: expected a JSON array")
    skipped: list[str] = []
    out: dict[str, Product] = {}
    for item in data:
        if not isinstance(item, dict):
            continue
        pid = _valid(item.get("id"), skipped)
        if pid is None or str(item.get("status", "")).lower() != "online":
            continue
        if _flag(item, "trading_disabled"):
            continue
        volume = _number(item.get("volume_24h")) * _number(item.get("price"))
        out.setdefault(pid, Product(pid, str(item.get("base_currency") or ""),
                                    str(item.get("quote_currency") or ""), volume))
    _log_skipped(skipped)
    return sorted(out.values(), key=lambda p: p.product_id)


def _log_skipped(skipped: list[str]) -> None:
    if skipped:
        log.warning("event=products_skipped count=%d reason=invalid_id ids=%r",
                    len(skipped), skipped[:10])


def parse_products(payload: bytes | str | object, dialect: str) -> list[Product]:
    """Parse a REST product list of ``dialect`` (``advanced_trade`` or ``exchange``)."""
    if dialect == "advanced_trade":
        return parse_advanced_trade(payload)
    if dialect == "exchange":
        return parse_exchange(payload)
    raise ValueError(f"unknown dialect {dialect!r}")


def select_products(available: Sequence[Product], wanted: str | Sequence[str],
                    exclude: Iterable[str] = ()) -> list[Product]:
    """The products to record: all available, or the configured list (minus exclusions).

    A configured product the venue does not list is left out (and logged): subscribing to it
    would only be refused.
    """
    excluded = set(exclude)
    if wanted == "all":
        return [p for p in available if p.product_id not in excluded]
    by_id = {p.product_id: p for p in available}
    missing = [pid for pid in wanted if pid not in by_id]
    if missing:
        log.warning("event=products_not_listed count=%d ids=%r", len(missing), missing[:10])
    return [by_id[pid] for pid in wanted if pid in by_id and pid not in excluded]


def diff_products(old: Iterable[str], new: Iterable[str]) -> ProductsDiff:
    """Product ids added and removed between two lists, each sorted."""
    before, after = set(old), set(new)
    return ProductsDiff(tuple(sorted(after - before)), tuple(sorted(before - after)))


async def _get(url: str, deadline_s: float) -> bytes:
    try:
        return await http_get(url, deadline_s, MAX_BODY_BYTES)
    except HttpError as exc:
        raise ProductsError(f"GET {url}: {exc}") from None


def _with_offset(url: str, offset: int) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "offset"]
    query.append(("offset", str(offset)))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


async def fetch_products(rest_url: str, dialect: str, timeout: float = 10.0
                         ) -> list[Product]:
    """GET the product list of ``dialect`` from ``rest_url``, all pages within ``timeout``
    seconds in total (an overall deadline, not a per-read one: a trickling server cannot hold
    it longer; cancelling the call ends it at once).

    Advanced Trade pages are followed while ``pagination.has_next`` is true (by ``offset``),
    at most ``MAX_PAGES``. Raises ``ProductsError`` with the URL and the cause on any failure.
    """
    if not rest_url.startswith(("http://", "https://")):
        raise ProductsError(f"GET {rest_url}: not an http(s) URL")
    try:
        async with asyncio.timeout(timeout):
            return await _fetch_pages(rest_url, dialect, timeout)
    except TimeoutError:
        raise ProductsError(f"GET {rest_url}: no complete product list within {timeout:g} s"
                            ) from None


async def _fetch_pages(rest_url: str, dialect: str, timeout: float) -> list[Product]:
    body = await _get(rest_url, timeout)
    if dialect != "advanced_trade":
        return parse_products(body, dialect)
    data = _decode(body)
    if not isinstance(data, dict) or not isinstance(data.get("products"), list):
        raise ProductsError(f'GET {rest_url}: expected {{"products": [...]}}')
    items: list[object] = list(data["products"])
    for _page in range(MAX_PAGES):
        pagination = data.get("pagination")
        if not (isinstance(pagination, dict) and pagination.get("has_next") is True
                and data["products"]):
            break
        data = _decode(await _get(_with_offset(rest_url, len(items)), timeout))
        if not isinstance(data, dict) or not isinstance(data.get("products"), list):
            raise ProductsError(f'GET {rest_url}: expected {{"products": [...]}} on a later page')
        items.extend(data["products"])
    return parse_advanced_trade({"products": items})

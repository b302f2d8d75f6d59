"""Which products to record, from the venue's REST list or the configuration, never hanging.

Why a module of its own: the daemon and the supervisor both need the same three things, each
interruptible by a stop request and bounded by ``venue.rest_timeout_s`` per fetch:

- ``discover``: ``venue.products = "all"`` — fetch until the venue answers (backoff); a stop
  ends the wait *and* the fetch under way at once.
- a fixed list (``venue.products = [ids]``): recorded at once, without REST
  (``fixed_products``); ``validate`` then asks REST in the background until it answers and
  says which configured ids the venue does not list (``Validation``): none listed → the
  process exits 2 naming them, some → they are dropped with a warning.
- ``refetch``: one periodic refresh; a failure or an abandoned (deadline) fetch is logged
  and the next refresh runs on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from logger.config import Config
from logger.products import Product, ProductsError, fetch_products, select_products

log = logging.getLogger("logger.daemon")

T = TypeVar("T")

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0


async def until_stopped(aw: Awaitable[T], stop_event: asyncio.Event) -> T | None:
    """``aw``'s result, or None as soon as ``stop_event`` is set (``aw`` is then cancelled)."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop_event.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    return task.result() if task.done() and not task.cancelled() else None


async def fetch_available(cfg: Config) -> list[Product]:
    """The venue's recordable products (one fetch, ``rest_timeout_s`` overall)."""
    v = cfg.venue
    return await fetch_products(v.rest_url, v.dialect, v.rest_timeout_s)


async def fetch_chosen(cfg: Config) -> list[Product]:
    """The venue's products the config selects. Raises ProductsError."""
    v = cfg.venue
    return select_products(await fetch_available(cfg), v.products, v.exclude_products)


async def _sleep(stop_event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), seconds)


async def discover(cfg: Config, stop_event: asyncio.Event) -> list[Product] | None:
    """The products to record; None when stopped first.

    A fixed list is returned at once (``fixed_products``, validated later by ``validate``);
    "all" is fetched, retrying with backoff until the venue answers with a recordable product.
    """
    if cfg.venue.products != "all":
        return fixed_products(cfg)
    delay = RETRY_FIRST_S
    while not stop_event.is_set():
        try:
            chosen = await until_stopped(fetch_chosen(cfg), stop_event)
            if chosen is None:
                return None
            if chosen:
                return chosen
            msg = "no recordable product in the venue's list"
        except ProductsError as e:
            msg = str(e)
        log.warning("event=products_unavailable retry_in_s=%.0f error=%r", delay, msg)
        await _sleep(stop_event, delay)
        delay = min(RETRY_MAX_S, delay * 2)
    return None


def fixed_products(cfg: Config) -> list[Product]:
    """The configured product list as products (no volume known yet: equal weights)."""
    v = cfg.venue
    excluded = set(v.exclude_products)
    ids = [p for p in dict.fromkeys(v.products) if p not in excluded]
    return [Product(p, p.partition("-")[0], p.partition("-")[2], 0.0) for p in ids]


@dataclass(frozen=True)
class Validation:
    """What the venue's REST list says about a fixed product list."""

    listed: list[Product]
    """The configured products the venue lists (with their volumes), in configured order."""
    unknown: list[str]
    """Configured ids the venue does not list (typos, delisted)."""


async def validate(cfg: Config, stop_event: asyncio.Event) -> Validation | None:
    """Ask REST about the fixed list until it answers (backoff, interruptible); None if
    stopped first. Recording does not wait for this."""
    wanted = [p.product_id for p in fixed_products(cfg)]
    delay = RETRY_FIRST_S
    while not stop_event.is_set():
        try:
            available = await until_stopped(fetch_available(cfg), stop_event)
        except ProductsError as e:
            log.warning("event=products_unverified retry_in_s=%.0f error=%r"
                        " note=recording_the_configured_list", delay, str(e))
            await _sleep(stop_event, delay)
            delay = min(RETRY_MAX_S, delay * 2)
            continue
        if available is None:
            return None
        by_id = {p.product_id: p for p in available}
        return Validation([by_id[p] for p in wanted if p in by_id],
                          [p for p in wanted if p not in by_id])
    return None


def report_validation(v: Validation) -> bool:
    """Log what ``validate`` found; False when none of the configured products exists (the
    caller exits 2)."""
    if not v.listed:
        log.error("event=products_unknown ids=%s error=%r", ",".join(v.unknown),
                  "none of the configured products is listed by the venue")
        return False
    if v.unknown:
        log.warning("event=products_not_listed count=%d ids=%s note=not_recorded",
                    len(v.unknown), ",".join(v.unknown))
    else:
        log.info("event=products_verified count=%d", len(v.listed))
    return True


async def refetch(cfg: Config) -> list[Product] | None:
    """One product refresh fetch; None (logged) when it failed, timed out or came back
    empty, so the current products are kept and the next refresh runs on time."""
    try:
        chosen = await fetch_chosen(cfg)
    except ProductsError as e:
        log.warning("event=refresh_failed error=%r note=retried_at_next_refresh", str(e))
        return None
    if not chosen:
        log.warning("event=refresh_empty note=keeping_current_products")
        return None
    return chosen


__all__ = ["Validation", "discover", "fetch_available", "fetch_chosen", "fixed_products",
           "refetch", "report_validation", "until_stopped", "validate"]

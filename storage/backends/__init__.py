"""Write backends and ``make_backend``, which turns the config's name into one.

``mmap`` (``mmap_backend``) is imported eagerly: it needs nothing beyond the standard
library. ``pwrite`` and ``uring`` are imported only when asked for (``pwrite_backend``,
``uring_backend``, with ``probe.uring_available``), so a missing io_uring binding costs nothing
until it is chosen; each exposes a class taking no arguments. ``auto`` picks io_uring only where
the probe has proved it works, else mmap.
"""

from __future__ import annotations

import importlib
from typing import cast

from storage.backends.base import Backend, WriteOp
from storage.backends.mmap_backend import MmapBackend

__all__ = ["BACKEND_NAMES", "DEFAULT_BACKEND", "Backend", "MmapBackend", "WriteOp", "make_backend"]

#: Every name ``make_backend`` takes: the one list (the daemon's config takes its choices here).
BACKEND_NAMES = ("auto", "mmap", "uring", "pwrite")

#: The backend of an engine (and of the daemon) that names none: mmap costs the least CPU per
#: record of the three (docs/STORAGE_BENCH.md) and needs no probe child at start-up, which
#: ``auto`` runs to see whether io_uring works here.
DEFAULT_BACKEND = "mmap"

_MODULES = {"pwrite": ("storage.backends.pwrite_backend", "PwriteBackend"),
            "uring": ("storage.backends.uring_backend", "UringBackend")}


def _load(name: str) -> Backend:
    module_name, class_name = _MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"backend {name!r} is not available: {e}") from e
    factory = getattr(module, class_name, None)
    if factory is None:
        raise ValueError(f"backend {name!r}: {module_name} has no {class_name}")
    return cast(Backend, factory())


def _uring_available() -> bool:
    try:
        probe = importlib.import_module("storage.backends.probe")
    except ImportError:
        return False
    return bool(probe.uring_available())


def make_backend(name: str) -> Backend:
    """The backend called ``name`` ("auto" | "mmap" | "uring" | "pwrite"); ValueError otherwise."""
    if name == "mmap":
        return MmapBackend()
    if name in _MODULES:
        return _load(name)
    if name == "auto":
        return _load("uring") if _uring_available() else MmapBackend()
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}")

"""The repository keeps the layout and dependency direction the architecture promises.

docs/ARCHITECTURE.md draws the map; these tests hold the code to it: storage imports neither
logger nor tools, the protocol core stays pure (no I/O, no storage), callers outside storage use
storage's public API only, the test venue (`tools/venue`) is no part of ingest and shares no
code with the recorder it tests, and tools reach logger only through the demo's entry point.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: what the sans-I/O protocol core may import: pure standard modules, the JSON codec, itself
PURE_CORE_IMPORTS = frozenset({
    "__future__", "abc", "bisect", "collections", "collections.abc", "dataclasses", "enum",
    "functools", "heapq", "itertools", "math", "operator", "re", "typing", "orjson",
})
#: modules that do I/O, keep time or run concurrently: never in the protocol core
IO_MODULES = frozenset({
    "asyncio", "io", "os", "pathlib", "selectors", "shutil", "signal", "socket", "ssl",
    "subprocess", "tempfile", "threading", "time", "multiprocessing", "concurrent", "picows",
    "urllib", "http", "logging", "websockets", "aiohttp", "requests", "mmap", "fcntl", "ctypes",
    "sys", "random", "datetime",
})
#: storage's public API (`storage`) and its one documented sub-API (remote objects)
STORAGE_API = ("storage", "storage.source")
#: the test and demo venue (a local Coinbase): a tools package, never imported by ingest
VENUE = "tools/venue"
#: the one door from tools/ into logger/: the demo, which runs the venue and the daemon together
DEMO_ENTRY = Path("tools/demo_cli.py")


def _modules(path: Path, package: str) -> Iterator[tuple[str, list[str]]]:
    """Every import of one file as (absolute module, imported names); relative imports are
    resolved against ``package`` (the file's own package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join([*base, *([node.module] if node.module else [])]), names
            elif node.module:
                yield node.module, names


def _imports_of(folder: str) -> Iterator[tuple[Path, str, list[str]]]:
    for path in sorted((ROOT / folder).rglob("*.py")):
        package = ".".join(path.relative_to(ROOT).parent.parts)
        for module, names in _modules(path, package):
            yield path.relative_to(ROOT), module, names


def _imports(package: str) -> set[str]:
    return {module.split(".")[0] for _, module, _ in _imports_of(package)}


def _all_of(module_path: Path) -> set[str]:
    tree = ast.parse(module_path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return set(value)
    raise AssertionError(f"{module_path} has no __all__")


def test_storage_imports_neither_logger_nor_tools() -> None:
    assert not {"logger", "tools"} & _imports("storage")


def test_logger_does_not_import_tools() -> None:
    assert "tools" not in _imports("logger")


def test_protocol_core_imports_no_io_and_no_storage() -> None:
    """The sans-I/O core is bytes in, decisions out: no sockets, files, clocks or threads, and
    no storage type (markers are the core's own, mapped to records by the sink)."""
    bad = []
    for path, module, _ in _imports_of("logger/protocol"):
        top = module.split(".")[0]
        if module.startswith("logger.protocol") or module in PURE_CORE_IMPORTS:
            continue
        bad.append(f"{path}: {module}" + (" (I/O)" if top in IO_MODULES else ""))
    assert bad == []


def test_callers_use_storage_public_api_only() -> None:
    """logger/ and tools/ import `storage` (or the documented `storage.source`), never a module
    behind it, and only names the API exports; tests and bench are white-box and exempt."""
    exported = {"storage": _all_of(ROOT / "storage/__init__.py"),
                "storage.source": _all_of(ROOT / "storage/source.py")}
    bad = []
    for folder in ("logger", "tools"):
        for path, module, names in _imports_of(folder):
            if module.split(".")[0] != "storage":
                continue
            if module not in STORAGE_API:
                bad.append(f"{path}: {module}")
                continue
            bad.extend(f"{path}: {module}.{n} (not exported)"
                       for n in names if n not in exported[module])
    assert bad == []


def test_storage_public_api_resolves() -> None:
    import storage
    import storage.source

    for module in (storage, storage.source):
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert missing == [], module.__name__


def test_the_socket_shell_uses_no_storage_type() -> None:
    """The connection speaks the core's marker kinds; the sink maps them to records."""
    bad = [f"{path}: {module}" for path, module, _ in _imports_of("logger")
           if path.name in ("connection.py", "pacing.py") and module.split(".")[0] == "storage"]
    assert bad == []


#: the sink's buffering internals: the sink is their one owner (``Sink.receiver``)
SINK_INTERNALS = frozenset({"StreamBuf", "StreamChunk", "Batch", "BoundedBatchQueue"})


def test_the_sink_is_the_only_owner_of_buffering() -> None:
    """The connection hands each message to the sink's receive step; no caller in logger/ or
    tools/ reaches into the sink's buffers (benchmarks that swap its queue are white-box)."""
    bad = [f"{path}: {module}.{name}" for folder in ("logger", "tools")
           for path, module, names in _imports_of(folder)
           if module == "logger.sink" for name in names if name in SINK_INTERNALS]
    assert bad == []


def test_the_protocol_core_names_no_clock_or_randomness() -> None:
    """Time reaches the core only as an argument (``FeedState.poll(now)``): the labels above
    cover what the allow-list already refuses, this keeps the allow-list honest."""
    assert not PURE_CORE_IMPORTS & IO_MODULES


def test_logger_never_imports_the_venue() -> None:
    """The daemon never needs the venue: it is a test and demo stand-in for Coinbase."""
    bad = [f"{path}: {module}" for path, module, _ in _imports_of("logger")
           if module == "tools.venue" or module.startswith("tools.venue.")]
    assert bad == []


def test_the_venue_imports_nothing_of_the_recorder() -> None:
    """The venue is the yardstick the recorder is measured against, so it shares none of its
    code, not even the stream-naming rule (`tools.venue.streams` states it again)."""
    bad = [f"{path}: {module}" for path, module, _ in _imports_of(VENUE)
           if module.split(".")[0] == "logger"]
    assert bad == []


def test_tools_reach_logger_only_through_the_demo_entry_point() -> None:
    bad = [f"{path}: {module}" for path, module, _ in _imports_of("tools")
           if module.split(".")[0] == "logger" and path != DEMO_ENTRY]
    assert bad == []


def test_top_level_layout_exists() -> None:
    for name in ("pyproject.toml", "README.md", "Makefile", ".ci/run", "logger", "storage",
                 "tools", "tests", "docs/ARCHITECTURE.md"):
        assert (ROOT / name).exists(), name

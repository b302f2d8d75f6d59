"""The compiled staging path (storage/_stage.c) writes exactly the bytes of the pure one.

``storage.fastpath`` chooses between them; files must never depend on the choice. Shown here:
its CRC32C equals google_crc32c's (SSE4.2 and software slicing-by-8 alike); a framed batch
equals ``format.encode_joined``'s for random columns, offsets, kinds and payload sizes (empty,
large, every pad length), whether written into a buffer or returned; inconsistent input is
refused before a byte is written; the engine leaves byte-identical trees through either path
(mmap: framed in the mapping; pwrite: as ops); and the fallback works where the module is
missing, disabled by ``CBL_PURE=1``, or could not be built (a broken compiler still leaves an
importable, working package).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_fast_path import OPS, STEADY, _run

from storage import fastpath
from storage.format import batch_size, encode_joined, read_batch

REPO = Path(__file__).resolve().parents[2]
needs_compiled = pytest.mark.skipif(not fastpath.available(),
                                    reason=f"storage._stage not built: {fastpath.PATH}")
I64 = st.integers(-(1 << 63), (1 << 63) - 1)


def _crc_modes() -> list[bool]:
    """Hardware (SSE4.2) and software CRC where the CPU has the instruction, else software."""
    if not fastpath.available():
        return []
    from storage import _stage
    return [True, False] if _stage.hardware_crc() else [False]


CRC_MODES = _crc_modes()


@contextlib.contextmanager
def crc_mode(hardware: bool) -> Iterator[None]:
    from storage import _stage
    before = _stage.use_hardware_crc(hardware)
    try:
        yield
    finally:
        _stage.use_hardware_crc(before)


def test_compiled_part_is_built_where_a_compiler_exists() -> None:
    """`pip install -e .` (make dev/test/run) builds it; a silent build failure would leave
    every other test here skipped."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}) here")
    assert fastpath.available(), fastpath.PATH


# -- CRC32C ------------------------------------------------------------------------------------


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFF_FFFF), st.integers(0, 15))
@example(b"", 0, 0)
@example(b"123456789", 0, 0)
def test_crc32c_matches_google_crc32c(data: bytes, seed: int, skip: int) -> None:
    from storage import _stage
    view = memoryview(data)[min(skip, len(data)):]  # unaligned starts
    for hardware in CRC_MODES:
        with crc_mode(hardware):
            assert _stage.crc32c(view, seed) == google_crc32c.extend(seed, bytes(view))
            assert _stage.crc32c(view) == google_crc32c.value(bytes(view))
            assert fastpath.crc32c(view, seed) == google_crc32c.extend(seed, bytes(view))


@needs_compiled
@pytest.mark.parametrize("hardware", CRC_MODES)
def test_crc32c_matches_on_large_buffers_and_the_check_value(hardware: bool) -> None:
    from storage import _stage
    blob = os.urandom((1 << 20) + 13)
    with crc_mode(hardware):
        assert _stage.hardware_crc() is hardware
        assert _stage.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
        assert _stage.crc32c(blob) == google_crc32c.value(blob)
        assert _stage.crc32c(blob[5:], 7) == google_crc32c.extend(7, blob[5:])
    with pytest.raises(ValueError):
        _stage.crc32c(b"x", 1 << 32)


# -- batch framing -----------------------------------------------------------------------------

SIZES = st.one_of(st.sampled_from([0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 140, 600]),
                  st.integers(0, 5000))
BATCHES = st.integers(1, 40).flatmap(lambda n: st.tuples(
    st.lists(I64, min_size=n, max_size=n),
    st.lists(SIZES, min_size=n, max_size=n),
    st.none() | st.binary(min_size=n, max_size=n),
))


def _columns(stamps: list[int], sizes: list[int]
             ) -> tuple[array[int], array[int], list[bytes], int, int]:
    payloads = [os.urandom(k) for k in sizes]
    lens = array("I", sizes)
    return array("q", stamps), lens, payloads, sum(sizes), batch_size(len(sizes), sum(sizes))


def _pure(ts: array[int], lens: array[int], kinds: bytes | None, payloads: list[bytes],
          payload_len: int, total: int, offset: int) -> bytes:
    head, body = encode_joined(ts, bytes(len(lens)) if kinds is None else kinds, lens, payloads,
                               min(ts), max(ts), payload_len, total, offset)
    return head + body


@needs_compiled
@settings(max_examples=200, deadline=None)
@given(BATCHES, st.integers(0, (1 << 63) - 1), st.integers(0, 17))
@example(([0], [0], None), 4096, 0)  # the smallest batch: 40 + 13 bytes, 3 of pad
@example(([5, -3], [3, 0], b"\x00\x07"), 1 << 40, 3)  # no pad
@example(([1], [1 << 20], None), 4096, 1)  # a large payload
def test_frame_writes_the_bytes_of_encode_joined(
    batch: tuple[list[int], list[int], bytes | None], offset: int, at: int,
) -> None:
    from storage import _stage
    stamps, sizes, kinds = batch
    ts, lens, payloads, payload_len, total = _columns(stamps, sizes)
    want = _pure(ts, lens, kinds, payloads, payload_len, total, offset)
    args = (ts, lens, kinds, payloads, min(stamps), max(stamps), payload_len, total)
    for hardware in CRC_MODES:
        with crc_mode(hardware):
            assert _stage.frame(None, 0, offset, *args) == want
    canvas = os.urandom(at + total + 9)
    for framer in (_stage.frame, fastpath.pure_frame_into):
        dest = bytearray(canvas)
        assert framer(dest, at, offset, *args) is None
        assert dest[at : at + total] == want
        assert dest[:at] == canvas[:at] and dest[at + total :] == canvas[at + total :]
    assert b"".join(fastpath.frame_parts(offset, *args)) == want
    info, blob = read_batch(want, 0, total, pos=offset)  # a valid batch, bound to its offset
    assert blob == want and info.count == len(sizes)
    # bytes-like payloads (which bytes.join takes too) give the same bytes
    likes = [bytearray(p) if i % 2 else memoryview(p) for i, p in enumerate(payloads)]
    assert _stage.frame(None, 0, offset, ts, lens, kinds, likes, min(stamps), max(stamps),
                        payload_len, total) == want


@needs_compiled
@pytest.mark.parametrize("change", ["payload_len", "total", "short_ts", "short_kinds",
                                    "not_bytes", "no_room", "empty"])
def test_frame_refuses_inconsistent_input_before_writing(change: str) -> None:
    from storage import _stage
    ts, lens, payloads, payload_len, total = _columns([1, 2, 3], [10, 0, 300])
    kinds: bytes | None = b"\x00\x01\x00"
    pl: list[object] = list(payloads)
    dest = bytearray(total + 16)
    at = 8
    if change == "payload_len":
        payload_len += 1
    elif change == "total":
        total += 8
    elif change == "short_ts":
        ts = ts[:2]
    elif change == "short_kinds":
        kinds = b"\x00"
    elif change == "not_bytes":
        pl[1] = 5
    elif change == "no_room":
        at = 17
    else:
        ts, lens, pl = array("q"), array("I"), []
    with pytest.raises((ValueError, TypeError)):
        _stage.frame(dest, at, 4096, ts, lens, kinds, pl, 1, 3, payload_len, total)
    assert dest == bytearray(len(dest))


# -- the engine through either path ------------------------------------------------------------


@needs_compiled
@settings(max_examples=25, deadline=None)
@given(OPS)
@example(STEADY)
def test_engine_writes_identical_files_through_either_path(ops: list[tuple[object, ...]],
                                                           ) -> None:
    """mmap frames in the mapping (direct), pwrite gets the batch as ops: both paths, both
    backends, the same trees after every commit (live segments included)."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for compiled in (False, True):
                fastpath.select(compiled)
                for backend in ("mmap", "pwrite"):
                    runs.append(_run(Path(tmp) / f"{backend}-{compiled}", backend, True,
                                     "extend_trusted", ops))
        finally:
            fastpath.select()
    for snaps in runs[1:]:
        assert snaps == runs[0]


def test_select_switches_and_reports(paths: None) -> None:
    assert fastpath.select(False).startswith("pure") and not fastpath.COMPILED
    assert fastpath.frame_into is fastpath.pure_frame_into
    if fastpath.available():
        assert fastpath.select(True).startswith("compiled") and fastpath.COMPILED
    else:
        with pytest.raises(RuntimeError):
            fastpath.select(True)


# -- fallback ----------------------------------------------------------------------------------

_SMOKE = """
import sys, tempfile, time
from pathlib import Path
{pre}
from storage import Engine, EngineConfig, fastpath, iter_segments
from storage.reader import SegmentReader
assert not fastpath.COMPILED, fastpath.PATH
print(fastpath.PATH)
root = Path(tempfile.mkdtemp())
eng = Engine(EngineConfig(root=root, backend="mmap", seal_stale_on_open=False))
s = eng.stream("BTC-USD", "level2")
now = time.time_ns()
eng.extend_trusted(s, [now, now + 1], [b"a", b"bb"])
assert not eng.commit(now).errors
eng.extend_trusted(s, [now + 2], [b"ccc"])
assert not eng.commit(now).errors
eng.close()
got = []
for ref in iter_segments(root):
    with SegmentReader.open(ref.path) as r:
        got += [x.payload for x in r.records()]
assert got == [b"a", b"bb", b"ccc"], got
"""


def _python(code: str, env: dict[str, str], *flags: str, cwd: Path | None = None,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *flags, "-c", code], env={**os.environ, **env},
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def test_pure_env_forces_the_pure_path() -> None:
    r = _python(_SMOKE.format(pre=""), {"CBL_PURE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pure (CBL_PURE set)")


def test_missing_module_falls_back_to_pure() -> None:
    pre = "sys.modules['storage._stage'] = None  # import blocked"
    r = _python(_SMOKE.format(pre=pre), {"CBL_PURE": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pure (storage._stage unavailable")


def test_a_broken_compiler_still_builds_a_working_pure_package(tmp_path: Path) -> None:
    """setup.py with CC=false in a copy of the sources: the build succeeds without the
    extension, and the copy imports and records on the pure path."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "storage", tmp_path / "storage",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                           cwd=tmp_path, env={**os.environ, "CC": "false"},
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr
    assert 'building extension "storage._stage" failed' in build.stderr
    assert not list((tmp_path / "storage").glob("_stage*.so"))
    # -S: no site-packages .pth (the editable install would map ``storage`` back to the
    # repository); the dependencies still come from site-packages on PYTHONPATH
    pre = f"import storage; assert storage.__file__.startswith({str(tmp_path)!r})"
    libs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    path = os.pathsep.join([str(tmp_path), *sorted(libs)])
    r = _python(_SMOKE.format(pre=pre), {"PYTHONPATH": path, "CBL_PURE": ""}, "-S",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("pure (storage._stage unavailable")

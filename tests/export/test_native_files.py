"""cbl-export writes byte-identical files with the compiled parts and with the pure-Python
code (what `CBL_PURE=1` selects): Parquet of the columnar path (exact and `--float`), of
every dataset, and the state files."""

from __future__ import annotations

from pathlib import Path

import pytest
from exportdata import generated_root

from tools.export_cli import main as export_main
from tools.normalize import book, scan


def _files(out: Path) -> dict[str, bytes]:
    return {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*"))
            if f.is_file()}


@pytest.mark.parametrize("args", [["-d", "trades,book_l2"], ["-d", "trades,book_l2", "--float"],
                                  []])
def test_compiled_and_pure_exports_are_byte_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    if scan.native_at_l2 is None and book.native_message is None:
        pytest.skip("compiled parts not built (or CBL_PURE set): nothing to compare")
    root = generated_root(tmp_path / "data", "advanced_trade", 6_000)
    assert export_main([str(root), "-o", str(tmp_path / "native"), "-q", *args]) == 0
    monkeypatch.setattr(scan, "native_at_l2", None)
    monkeypatch.setattr(book, "native_message", None)
    assert export_main([str(root), "-o", str(tmp_path / "pure"), "-q", *args]) == 0
    native, pure = _files(tmp_path / "native"), _files(tmp_path / "pure")
    assert any(k.endswith(".parquet") for k in native)
    assert native == pure

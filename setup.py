"""Compiled parts of coinbase-logger: every one optional (pyproject.toml holds the metadata).

Each entry of ``COMPILED`` is one C extension written against the CPython API (no build
dependency beyond setuptools and a C compiler). ``optional=True``: where one cannot be built (no
compiler, exotic platform) the install still succeeds and the pure-Python path is used at run
time -- ``storage/fastpath.py`` is the one place that decides, and ``CBL_PURE=1`` forces the
pure path. Adding a compiled part is one line here plus its fallback switch.
"""

from setuptools import Extension, setup

COMPILED: dict[str, list[str]] = {
    "storage._stage": ["storage/_stage.c"],  # batch framing + CRC32C (storage/fastpath.py)
}

setup(
    ext_modules=[
        Extension(name, sources, optional=True, extra_compile_args=["-O2"])
        for name, sources in COMPILED.items()
    ],
)

"""Compiled parts of coinbase-logger: every one optional (pyproject.toml holds the metadata).

Each entry of ``COMPILED`` is one C extension written against the CPython API (no build
dependency beyond setuptools and a C compiler); ``cython_parts`` adds the one Cython extension,
the WebSocket listener's per-frame path, whose build requirements (Cython, picows) are in
pyproject.toml. ``optional=True``: where one cannot be built (no compiler, exotic platform) the
install still succeeds and the pure-Python path is used at run time -- ``storage/fastpath.py``,
``logger/protocol/native.py``, ``logger/listen.py`` and ``tools/normalize/native.py`` are the
places that decide (one per part), and ``CBL_PURE=1`` forces the pure path. Adding a compiled
part is one line here plus its fallback switch.
"""

from setuptools import Extension, setup


def cython_parts() -> list[Extension]:
    """``logger._listen``, the listener's per-frame fast path (logger/listen.py), written in
    Cython against picows' ``.pxd`` API: built only where Cython and picows are importable
    at build time (pyproject.toml's build requirements bring both, picows at the version the
    daemon runs with), optional like the others; the version it was built against is compiled
    in, and logger/listen.py refuses the module under any other picows."""
    try:
        import os

        import picows
        from Cython.Build import cythonize
        from picows.version import __version__ as picows_version
    except ImportError:
        return []
    ext = Extension("logger._listen", ["logger/_listen.pyx"], optional=True,
                    include_dirs=[os.path.dirname(picows.__file__)],
                    extra_compile_args=["-O2"])
    try:
        return list(cythonize([ext], compile_time_env={"PICOWS_BUILT_WITH": picows_version},
                              quiet=True))
    except Exception:  # a Cython error must not break the install: the Python listener runs
        return []


COMPILED: dict[str, list[str]] = {
    "storage._stage": ["storage/_stage.c"],  # batch framing + CRC32C (storage/fastpath.py)
    # the dialect routers' per-frame scan (logger/protocol/native.py)
    "logger.protocol._route": ["logger/protocol/_route.c"],
    # the export's scan of AT l2_data frames and the book's per-message work
    # (tools/normalize/native.py)
    "tools.normalize._scan": ["tools/normalize/_scan.c"],
    "tools.normalize._book": ["tools/normalize/_book.c"],
}

setup(
    ext_modules=[
        Extension(name, sources, optional=True, extra_compile_args=["-O2"])
        for name, sources in COMPILED.items()
    ] + cython_parts(),
)

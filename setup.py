"""Optional compiled speed-ups; the project's metadata is in pyproject.toml.

Every extension here is `optional=True` and has a pure-Python twin that is used when it is
not built (no compiler) or when `CBL_PURE=1` is set; tests check both give identical output.
"""

from setuptools import Extension, setup

_FLAGS = ["-O2"]

setup(ext_modules=[
    # tools/normalize: the AT level2 scan (export) and the book's level loop
    Extension("tools.normalize._scan", ["tools/normalize/_scan.c"], extra_compile_args=_FLAGS,
              optional=True),
    Extension("tools.normalize._book", ["tools/normalize/_book.c"], extra_compile_args=_FLAGS,
              optional=True),
])

"""Build script for the optional compiled hot paths; everything else is in pyproject.toml.

Each extension is ``optional=True``: where it cannot be built (no C compiler, no Python
headers) the install goes on without it and the pure-Python path runs instead (the one
selection point of each: logger/protocol/native.py). ``CBL_PURE=1`` forces the pure path at
run time even where the extension is built.
"""

from setuptools import Extension, setup

EXTENSIONS = [
    # the dialect routers' per-frame scan (logger/protocol/route_at.py, route_exchange.py)
    Extension("logger.protocol._route", ["logger/protocol/_route.c"], optional=True,
              extra_compile_args=["-O2"]),
]

setup(ext_modules=EXTENSIONS)

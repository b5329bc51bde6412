"""Only the optional C extension lives here; everything else is in pyproject.toml.

``optional=True``: where it cannot be compiled (no C compiler, no Python
headers), the build warns and greenpool runs its pure-Python twin
(``greenpool.monkey.queue._PyQueueCore``).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("greenpool._speedups", ["greenpool/_speedups.c"], optional=True)])

"""Only the optional C extensions live here; everything else is in pyproject.toml.

``optional=True``: where one cannot be compiled (no C compiler, no Python
headers), the build warns and greenpool runs its pure-Python twins
(``greenpool._compiled`` says which module each one speeds up).
"""

from setuptools import Extension, setup

COMMON = ["greenpool/_speedups_common.h"]


def _extension(name: str) -> Extension:
    return Extension(f"greenpool.{name}", [f"greenpool/{name}.c"], depends=COMMON, optional=True)


setup(ext_modules=[_extension("_speedups"), _extension("_speedups_gevent"), _extension("_speedups_waiter")])

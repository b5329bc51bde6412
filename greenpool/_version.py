"""greenpool's version, in a module of its own: the HTTP core names it in
``SERVER_SOFTWARE`` and must not import the package's ``__init__`` for it."""

__version__ = "0.1.0"

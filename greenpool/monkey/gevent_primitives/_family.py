"""The class tree of gevent's queues and semaphores, kept for ``isinstance``/``issubclass``."""

from __future__ import annotations


class _FamilyMeta(type):
    """Keeps gevent's class tree visible to ``isinstance``/``issubclass``.

    In gevent, ``Queue`` subclasses ``SimpleQueue`` and ``BoundedSemaphore``
    subclasses ``Semaphore``. Here each class needs ``__slots__`` (attributes
    in an instance ``__dict__`` of a Cython subclass cost ~7 ns per access
    on the hot paths), and two slotted subclasses of different gevent bases
    cannot be combined, so the family tree is declared instead: ``family``
    names the classes that count as subclasses.
    """

    def __instancecheck__(cls, obj) -> bool:
        return cls.__subclasscheck__(type(obj))

    def __subclasscheck__(cls, sub) -> bool:
        if type.__subclasscheck__(cls, sub):
            return True
        return any(
            isinstance(member, type) and type.__subclasscheck__(member, sub)
            for member in cls.__dict__.get("_gp_family", ())
        )

"""gevent's own queues, events, locks, pools and greenlet joins, made to work across hubs.

Libraries that ship a gevent driver (python-engineio's gevent mode, which
Flask-SocketIO picks when gevent is installed) use ``gevent.queue``,
``gevent.event`` and ``gevent.lock`` directly, not the stdlib names
:mod:`greenpool.monkey.sync` patches. gevent's classes belong to one hub: a
``JoinableQueue`` getter on hub 0 was never woken by a put on hub 1 (gevent
asserted "Can only use Waiter.switch method from the Hub greenlet"), an
``Event`` waited on by two hubs raised ``InvalidThreadUseError``, and a
``Greenlet.join()`` from another hub tried to switch into a foreign thread.

**Why replacement classes, not gevent's classes fixed in place.** gevent's
classes are compiled Cython types: immutable (no attribute can be set on
them, no object's ``__class__`` changed), their internals are ``cdef``
methods called in C, and they ``cimport`` their ``Waiter`` and
``getcurrent``, so nothing reachable from Python can redirect a wake-up.
Making them cross-hub in place would mean forcing gevent's pure-Python mode
(chosen before gevent is imported, i.e. before ``import greenpool``, and
several times slower on every hub-local operation) or rewriting C type flags.
So :func:`install` puts subclasses in the modules' names instead
(``gevent.queue.JoinableQueue``, ``gevent.event.Event``, ``gevent.spawn``...),
and then rebinds module-level references to the old classes in modules
already imported (``from gevent.queue import Queue`` done before
``patch_all()``, ``gevent.pool``'s own imports; ``_install._rebind_module_globals``
says where not) and ``gevent.pool.Group``'s ``greenlet_class``. Being
subclasses, they pass ``isinstance`` checks against gevent's classes (and
``_family._FamilyMeta`` keeps gevent's tree: a ``Queue`` is a ``SimpleQueue``),
and classes that subclass them after patching (engineio's
``Thread(gevent.Greenlet)``) inherit the cross-hub methods.
What cannot be reached: objects made before ``patch_all()`` and classes
defined by subclassing gevent's before it; both stay one-hub objects.

**How they wake across hubs.** The queues, events and semaphores keep their
state in structures whose hot operations are single C calls, atomic under the
GIL (a deque's ``append``/``pop``), so the uncontended same-hub path takes no
lock (``benchmarks/gevent_primitives.py`` compares it with gevent's). Only a
caller that must wait parks, through :func:`greenpool._waiter.make_waiter`:
on its own pool hub (woken through that hub's thread-safe mailbox), on a
foreign gevent hub (an ``async_`` watcher) or natively in a plain thread. A
waiter parks first and then looks again, a waker changes the state first and
then looks for parked waiters, so one always sees the other: no lost
wake-ups. A woken waiter competes with newcomers, as on one gevent hub.
``rawlink`` callbacks run in the hub of the greenlet that registered them, so
``gevent.wait``/``iwait`` and ``AsyncResult`` links work across hubs too.

* :mod:`greenpool.monkey.gevent_primitives.queue`: ``gevent.queue``'s classes;
* :mod:`greenpool.monkey.gevent_primitives.event`: ``Event`` and ``AsyncResult``;
* :mod:`greenpool.monkey.gevent_primitives.lock`: ``Semaphore`` and ``BoundedSemaphore``;
* :mod:`greenpool.monkey.gevent_primitives.greenlet`: ``Greenlet``, joined,
  got, linked and killed from any hub;
* :mod:`greenpool.monkey.gevent_primitives.pool`: ``gevent.pool.Group``'s
  bookkeeping under a lock;
* ``_parking`` (waiting and posting across hubs, the ``rawlink`` protocol),
  ``_family`` (the class tree) and ``_install`` (:func:`install`) serve them.
"""

from greenpool.monkey.gevent_primitives._install import install, installed
from greenpool.monkey.gevent_primitives.event import AsyncResult, Event
from greenpool.monkey.gevent_primitives.greenlet import Greenlet
from greenpool.monkey.gevent_primitives.lock import BoundedSemaphore, Semaphore
from greenpool.monkey.gevent_primitives.queue import (
    Channel,
    JoinableQueue,
    LifoQueue,
    PriorityQueue,
    Queue,
    SimpleQueue,
    UnboundQueue,
)

__all__ = [
    "AsyncResult",
    "BoundedSemaphore",
    "Channel",
    "Event",
    "Greenlet",
    "JoinableQueue",
    "LifoQueue",
    "PriorityQueue",
    "Queue",
    "Semaphore",
    "SimpleQueue",
    "UnboundQueue",
    "install",
    "installed",
]

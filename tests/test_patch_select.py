"""``select.poll`` after ``greenpool.monkey.patch_all()`` (``greenpool._patch_select``).

Each check runs in a fresh patched interpreter (see ``test_patch_threads``).
"""

from __future__ import annotations

import pytest

from tests.test_patch_threads import result_of, run_script

pytestmark = pytest.mark.timeout(60)


def test_poll_is_greenpools_and_zero_timeout_reports_like_the_stdlib():
    proc = run_script(
        """
        import select, socket
        from greenpool import _patch_select
        a, b = socket.socketpair()
        p = select.poll()
        p.register(a, select.POLLIN)
        empty = p.poll(0)
        b.send(b"x")
        ready = p.poll(0.0)
        c, d = socket.socketpair()
        q = select.poll()
        q.register(c.fileno(), select.POLLIN)
        c.close()
        closed = q.poll(0)
        report(cls=type(p) is _patch_select.poll, empty=empty, ready=ready,
               fd=a.fileno(), closed=closed, nval=select.POLLNVAL, pollin=select.POLLIN)
        """
    )
    values = result_of(proc)
    assert values["cls"] is True
    assert values["empty"] == []
    assert values["ready"] == [[values["fd"], values["pollin"]]]
    assert values["closed"][0][1] & values["nval"]


def test_zero_timeout_poll_makes_no_watcher_and_still_yields_to_other_greenlets():
    proc = run_script(
        """
        import select, socket, gevent
        from gevent import get_hub
        a, b = socket.socketpair()
        p = select.poll()
        p.register(a, select.POLLIN)
        made = []
        loop = get_hub().loop
        # Count the watchers the poll object asks its loop for.
        class Spy:
            def __init__(self, loop): self._loop = loop
            def io(self, *args, **kw):
                made.append(args)
                return self._loop.io(*args, **kw)
            def __getattr__(self, name): return getattr(self._loop, name)
        p.loop = Spy(loop)
        flag = []
        gevent.spawn(flag.append, 1)
        spins = 0
        while not flag:  # a non-blocking polling loop: must not starve the spawned greenlet
            assert p.poll(0) == []
            spins += 1
            if spins > 1000:
                break
        report(flag=flag, spins=spins, watchers=len(made))
        """
    )
    values = result_of(proc)
    assert values["flag"] == [1]
    assert values["spins"] == 1
    assert values["watchers"] == 0


def test_poll_made_in_main_thread_waits_on_the_hub_of_the_thread_using_it():
    proc = run_script(
        """
        import select, socket
        a, b = socket.socketpair()
        p = select.poll()          # made on the main thread's hub
        p.register(a, select.POLLIN)
        got = {}
        started = threading.Event()
        def waiter():
            got["hub"] = hub_index()
            started.set()
            got["events"] = p.poll(20000)  # blocks this thread's hub only
        t = threading.Thread(target=waiter)
        t.start()
        started.wait(20)
        b.send(b"x")
        t.join(20)
        report(alive=t.is_alive(), hub=got.get("hub"), events=got.get("events"),
               fd=a.fileno(), pollin=select.POLLIN)
        """
    )
    values = result_of(proc)
    assert values["alive"] is False
    assert values["hub"] is not None
    assert values["events"] == [[values["fd"], values["pollin"]]]


def test_poll_timeout_expires_on_a_pool_hub():
    proc = run_script(
        """
        import select, socket
        a, b = socket.socketpair()
        out = {}
        def waiter():
            p = select.poll()
            p.register(a, select.POLLIN)
            t0 = time.monotonic()
            out["events"] = p.poll(50)
            out["waited"] = time.monotonic() - t0
        t = threading.Thread(target=waiter)
        t.start()
        t.join(20)
        report(out=out)
        """
    )
    out = result_of(proc)["out"]
    assert out["events"] == []
    assert out["waited"] >= 0.04

"""``select.poll`` after ``greenpool.monkey.patch_all()`` (``greenpool.monkey.select``).

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
        from greenpool.monkey import select as _patch_select
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
        from greenpool.monkey import select as _patch_select
        a, b = socket.socketpair()
        p = select.poll()
        p.register(a, select.POLLIN)
        made = []
        real_hub = get_hub()
        class SpyLoop:  # counts the watchers a poll asks its hub's loop for
            def io(self, *args):
                made.append(args)
                return real_hub.loop.io(*args)
            def __getattr__(self, name):
                return getattr(real_hub.loop, name)
        class SpyHub:
            loop = SpyLoop()
        _patch_select._get_hub = lambda: SpyHub
        flag = []
        gevent.spawn(flag.append, 1)
        spins = 0
        while not flag:  # a non-blocking polling loop: must not starve the spawned greenlet
            assert p.poll(0) == []
            spins += 1
            if spins > 1000:
                break
        zero_made = len(made)
        assert p.poll(1) == []  # a waiting poll does use the loop: the spy sees it
        report(flag=flag, spins=spins, zero=zero_made, waiting=len(made))
        """
    )
    values = result_of(proc)
    assert values["flag"] == [1]
    assert values["spins"] == 1
    assert values["zero"] == 0
    assert values["waiting"] == 1


def test_zero_timeout_poll_reports_pollout_and_the_default_mask_like_the_stdlib():
    proc = run_script(
        """
        import select, socket
        from gevent.monkey import get_original
        a, b = socket.socketpair()
        b.send(b"x")
        def ask(patched, mask):
            p = (select.poll if patched else get_original("select", "poll"))()
            if mask is None:
                p.register(a)
            else:
                p.register(a, mask)
            return p.poll(0)
        cases = {"out": select.POLLOUT, "in": select.POLLIN,
                 "both": select.POLLIN | select.POLLOUT, "default": None}
        report(ours={k: ask(True, m) for k, m in cases.items()},
               stdlib={k: ask(False, m) for k, m in cases.items()})
        """
    )
    values = result_of(proc)
    stdlib = values["stdlib"]
    assert values["ours"] == stdlib
    assert stdlib["out"] and stdlib["out"][0][1] == 4  # POLLOUT: what libev's WRITE=2 is not


def test_one_poll_object_shared_by_threads_on_four_hubs_waits_on_each_callers_hub():
    proc = run_script(
        """
        import select, socket
        sys.setswitchinterval(1e-6)  # switch threads as often as possible
        a, b = socket.socketpair()
        b.send(b"x")  # always readable: every poll returns at once
        p = select.poll()
        p.register(a, select.POLLIN)
        stop = time.monotonic() + 1.5
        errors, counts, hubs = [], [], set()
        def worker():
            n = 0
            hubs.add(hub_index())
            try:
                while time.monotonic() < stop:
                    assert p.poll(1000) == [(a.fileno(), select.POLLIN)]
                    n += 1
            except BaseException as exc:
                errors.append(repr(exc))
            counts.append(n)
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        report(alive=[t.is_alive() for t in threads], errors=errors[:3], counts=counts,
               hubs=len(hubs))
        """
    )
    values = result_of(proc)
    assert values["errors"] == []
    assert values["alive"] == [False] * 4
    assert values["hubs"] == 4
    assert min(values["counts"]) > 0


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

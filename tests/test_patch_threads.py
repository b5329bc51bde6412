"""Patched threads on N hubs: ``threading.Thread`` after ``greenpool.monkey.patch_all()``.

Every patched check runs a script in a fresh interpreter (patching is per
process); the script prints one ``RESULT`` line of JSON that the test reads.
The default pool's size comes from ``GREENPOOL_HUBS`` (4 here unless a test
says otherwise), which is also tested unpatched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from greenpool.api import HUBS_ENV, default_size

PRELUDE = """\
import json, os, sys, time
from greenpool import monkey
monkey.patch_all()
import threading
import greenpool

def report(**values):
    print("RESULT " + json.dumps(values), flush=True)

def hub_index():
    hub = greenpool.current_hub()
    return None if hub is None else hub.index
"""


def run_script(code: str, hubs: str | None = "4", patched: bool = True, timeout: float = 40):
    """Run ``code`` (after the patching prelude) in a child; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop(HUBS_ENV, None)
    if hubs is not None:
        env[HUBS_ENV] = hubs
    source = (PRELUDE if patched else "") + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout, env=env,
    )


def result_of(proc: subprocess.CompletedProcess, quiet: bool = True) -> dict:
    """The child's RESULT values; fails with its output if it did not exit 0 or report.

    With ``quiet`` a traceback anywhere on stderr (a hub's, at exit) fails too.
    """
    output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{output}"
    assert not quiet or "Traceback" not in proc.stderr, f"a traceback was printed\n{output}"
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"no RESULT line\n{output}")


# -- where threads run -------------------------------------------------------


def test_threads_started_in_main_thread_spread_over_default_pool_hubs():
    proc = run_script(
        """
        where = {}
        def work(i):
            where[i] = (hub_index(), greenpool.current_pool() is greenpool.default_pool())
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report(where=sorted(where.values()), size=greenpool.default_pool().size)
        """
    )
    values = result_of(proc)
    assert values["size"] == 4
    assert sorted({hub for hub, _ in values["where"]}) == [0, 1, 2, 3]
    assert all(in_default for _, in_default in values["where"])
    assert len(values["where"]) == 8


def test_thread_started_at_import_runs_on_a_pool_hub(tmp_path):
    (tmp_path / "starts_a_thread.py").write_text(
        textwrap.dedent(
            """
            import threading
            import greenpool
            seen = []
            def record():
                seen.append(greenpool.current_hub() is not None)
            worker = threading.Thread(target=record, name="at-import")
            worker.start()
            """
        )
    )
    proc = run_script(
        f"""
        sys.path.insert(0, {str(tmp_path)!r})
        import starts_a_thread
        starts_a_thread.worker.join()
        report(seen=starts_a_thread.seen)
        """
    )
    assert result_of(proc)["seen"] == [True]


def test_thread_started_in_a_native_thread_is_dispatched():
    proc = run_script(
        """
        from gevent.monkey import get_original
        start_native, allocate_native = get_original(
            "_thread", ["start_new_thread", "allocate_lock"])
        done = allocate_native()
        done.acquire()
        where = []
        def native():
            t = threading.Thread(target=lambda: where.append(hub_index()))
            t.start()
            t.join()
            done.release()
        start_native(native, ())
        done.acquire()
        report(where=where)
        """
    )
    where = result_of(proc)["where"]
    assert len(where) == 1 and where[0] in range(4)


def test_thread_started_inside_a_pool_greenlet_stays_on_its_hub():
    proc = run_script(
        """
        def start_here():
            where = []
            threads = [threading.Thread(target=lambda: where.append(hub_index()))
                       for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return hub_index(), where
        pool = greenpool.Pool(4, name="app")
        results = [pool.spawn_on(i, start_here).result(timeout=30) for i in (1, 3)]
        pool.shutdown()
        report(results=results)
        """
    )
    for hub, where in result_of(proc)["results"]:
        assert where == [hub] * 6


def test_thread_started_in_run_toplevel_goes_to_the_default_pool_and_outlives_run():
    proc = run_script(
        """
        forever = []
        def main():
            where = []
            def work():
                where.append((hub_index(), greenpool.current_pool().name))
            threads = [threading.Thread(target=work) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            def spin():
                while True:
                    time.sleep(0.01)
            daemon = threading.Thread(target=spin, daemon=True)  # must not hold run()
            daemon.start()
            forever.append(daemon)
            return where
        where = greenpool.run(main, size=2, name="runpool")
        report(where=where, daemon_alive=forever[0].is_alive())
        """
    )
    values = result_of(proc)
    assert sorted({hub for hub, _ in values["where"]}) == [0, 1, 2, 3]
    assert {name for _, name in values["where"]} == {"greenpool-default"}
    assert values["daemon_alive"] is True


def test_threads_started_by_a_thread_are_dispatched():
    proc = run_script(
        """
        where = []
        def child():
            where.append(hub_index())
        def parent():
            children = [threading.Thread(target=child) for _ in range(8)]
            for t in children:
                t.start()
            for t in children:
                t.join()
        t = threading.Thread(target=parent)
        t.start()
        t.join()
        report(where=where)
        """
    )
    where = result_of(proc)["where"]
    assert len(where) == 8
    assert sorted(set(where)) == [0, 1, 2, 3]


def test_threading_server_in_a_thread_handles_requests_on_several_hubs():
    # The classic legacy set-up: serve_forever() in a thread, one thread per
    # request (ThreadingMixIn). Each handler thread is dispatched, and its
    # accepted socket follows it to its hub.
    proc = run_script(
        """
        import socket
        import socketserver
        where = []
        class Echo(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline()
                where.append(hub_index())
                self.wfile.write(line.upper())
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
        serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        serving.start()
        answers = []
        for i in range(8):
            with socket.create_connection(server.server_address, timeout=20) as c:
                c.sendall(b"hello %d\\n" % i)
                answers.append(c.makefile("rb").readline().decode().strip())
        server.shutdown()
        server.server_close()
        serving.join()
        report(answers=answers, where=where)
        """
    )
    values = result_of(proc)
    assert values["answers"] == [f"HELLO {i}" for i in range(8)]
    assert len(set(values["where"])) > 1


def test_executor_workers_are_dispatched_even_from_inside_a_pool_greenlet():
    proc = run_script(
        """
        from concurrent.futures import ThreadPoolExecutor
        def in_request():
            everyone = threading.Barrier(4)  # four workers at once: four threads
            def task(_):
                everyone.wait(timeout=20)
                pool = greenpool.current_pool()
                return hub_index(), pool is greenpool.default_pool()
            with ThreadPoolExecutor(4) as executor:
                return list(executor.map(task, range(4)))
        pool = greenpool.Pool(2, name="app")
        where = pool.spawn_on(0, in_request).result(timeout=30)
        pool.shutdown()
        report(where=where)
        """
    )
    where = result_of(proc)["where"]
    assert sorted(hub for hub, _ in where) == [0, 1, 2, 3]
    assert all(in_default for _, in_default in where)


def test_start_new_thread_returns_the_ident_the_thread_sees():
    proc = run_script(
        """
        import _thread
        seen = []
        finished = threading.Event()
        def body():
            seen.append((threading.get_ident(), hub_index()))
            finished.set()
        ident = _thread.start_new_thread(body, ())
        assert finished.wait(20)
        report(ident=ident, seen=seen)
        """
    )
    values = result_of(proc)
    [(ident, hub)] = values["seen"]
    assert ident == values["ident"]
    assert hub in range(4)


def test_patching_twice_keeps_threads_dispatched():
    proc = run_script(
        """
        import _thread
        from gevent import monkey as gevent_monkey
        gevent_monkey.patch_all()  # gevent's again: a no-op with the same settings
        monkey.patch_all()
        where = []
        threads = [threading.Thread(target=lambda: where.append(hub_index())) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        start = getattr(_thread, "start_joinable_thread", None)  # Python 3.13+ starts with it
        if start is None:
            same = _thread.start_new_thread is threading._start_new_thread
        else:
            same = start is threading._start_joinable_thread
        report(where=sorted(where), same=same)
        """
    )
    values = result_of(proc)
    assert values["where"] == [0, 1, 2, 3]
    assert values["same"] is True


# -- the threading API across hubs ------------------------------------------------


def test_join_with_timeout_and_is_alive_across_hubs():
    proc = run_script(
        """
        go = threading.Event()
        t = threading.Thread(target=go.wait, name="waiter")
        t.start()
        t0 = time.monotonic()
        t.join(0.05)
        waited = time.monotonic() - t0
        alive_while_waiting = t.is_alive()
        go.set()
        t.join()
        report(waited=waited, alive_while_waiting=alive_while_waiting, alive_after=t.is_alive())
        """
    )
    values = result_of(proc)
    assert values["alive_while_waiting"] is True
    assert values["waited"] >= 0.04
    assert values["alive_after"] is False


def test_join_from_another_thread_on_another_hub():
    proc = run_script(
        """
        go = threading.Event()
        target = threading.Thread(target=go.wait)
        target.start()
        seen = {}
        def joiner():
            seen["hub"] = hub_index()
            target.join()
            seen["joined_alive"] = target.is_alive()
        joiners = [threading.Thread(target=joiner) for _ in range(3)]
        for j in joiners:
            j.start()
        go.set()
        for j in joiners:
            j.join()
        report(seen=seen)
        """
    )
    assert result_of(proc)["seen"]["joined_alive"] is False


def test_threads_ending_under_joiners_on_other_hubs_print_nothing():
    # A thread's end releases its tstate lock while joiners on other hubs wait
    # on it (for more than a millisecond: long enough for a lock to hand off).
    proc = run_script(
        """
        for _ in range(40):
            target = threading.Thread(target=time.sleep, args=(0.003,))
            target.start()
            joiners = [threading.Thread(target=target.join) for _ in range(2)]
            for j in joiners:
                j.start()
            target.join()
            for j in joiners:
                j.join()
            assert not target.is_alive()
        report(count=threading.active_count())
        """
    )
    assert result_of(proc)["count"] == 1


def test_a_thread_joining_the_main_thread_runs_after_main_ends():
    proc = run_script(
        """
        def watcher():
            threading.main_thread().join()
            print("main ended; watcher on a hub:", hub_index() is not None, flush=True)
        threading.Thread(target=watcher).start()
        print("main done", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main done", "main ended; watcher on a hub: True"]
    assert proc.stderr == ""


def test_timer_fires_on_a_hub_and_cancel_stops_it():
    proc = run_script(
        """
        fired = threading.Event()
        where = []
        timer = threading.Timer(0.01, lambda: (where.append(hub_index()), fired.set()))
        timer.start()
        assert fired.wait(20)
        timer.join()
        never = []
        cancelled = threading.Timer(30, never.append, args=(1,))
        cancelled.start()
        cancelled.cancel()
        cancelled.join(20)
        report(where=where, never=never, alive=cancelled.is_alive())
        """
    )
    values = result_of(proc)
    assert values["where"][0] in range(4)
    assert values["never"] == []
    assert values["alive"] is False


def test_current_thread_enumerate_and_active_count_see_threads_on_every_hub():
    proc = run_script(
        """
        go = threading.Event()
        started = threading.Semaphore(0)
        seen = {}
        def work():
            me = threading.current_thread()
            seen[me.name] = (me is threads_by_name[me.name], hub_index())
            started.release()
            go.wait()
        threads = [threading.Thread(target=work, name=f"worker-{i}") for i in range(6)]
        threads_by_name = {t.name: t for t in threads}
        for t in threads:
            t.start()
        for _ in threads:
            assert started.acquire(timeout=20)
        listed = {t.name for t in threading.enumerate()}
        count = threading.active_count()
        go.set()
        for t in threads:
            t.join()
        after = {t.name for t in threading.enumerate()}
        report(seen=seen, listed=sorted(listed), count=count, after=sorted(after),
               main=threading.current_thread() is threading.main_thread())
        """
    )
    values = result_of(proc)
    names = [f"worker-{i}" for i in range(6)]
    assert all(values["seen"][n][0] for n in names)
    assert {values["seen"][n][1] for n in names} == {0, 1, 2, 3}
    assert set(names) <= set(values["listed"])
    assert "MainThread" in values["listed"]
    assert values["count"] >= 7
    assert not set(names) & set(values["after"])
    assert values["main"] is True


def test_thread_names_and_idents_are_unique():
    proc = run_script(
        """
        go = threading.Event()
        started = threading.Semaphore(0)
        idents = []
        def work():
            idents.append(threading.get_ident())
            started.release()
            go.wait()  # all alive at once: idents of live threads must differ
        threads = [threading.Thread(target=work) for _ in range(20)]
        for t in threads:
            t.start()
        for _ in threads:
            assert started.acquire(timeout=20)
        go.set()
        for t in threads:
            t.join()
        report(idents=idents, thread_idents=[t.ident for t in threads],
               names=[t.name for t in threads])
        """
    )
    values = result_of(proc)
    assert len(set(values["idents"])) == 20
    assert sorted(values["idents"]) == sorted(values["thread_idents"])
    assert len(set(values["names"])) == 20


def test_threading_local_is_per_thread_across_hubs():
    proc = run_script(
        """
        data = threading.local()
        data.value = "main"
        everyone = threading.Barrier(4)
        seen = {}
        def work(i):
            seen[i] = [getattr(data, "value", None)]
            data.value = i
            everyone.wait(timeout=20)  # all four have set theirs before any reads back
            seen[i] += [data.value, hub_index()]
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report(seen=seen, main=data.value)
        """
    )
    values = result_of(proc)
    for i in range(4):
        before, after, _hub = values["seen"][str(i)]
        assert before is None
        assert after == i
    assert {values["seen"][str(i)][2] for i in range(4)} == {0, 1, 2, 3}
    assert values["main"] == "main"


def test_exception_in_a_thread_goes_to_threading_excepthook():
    proc = run_script(
        """
        caught = []
        threading.excepthook = lambda args: caught.append(
            (args.exc_type.__name__, str(args.exc_value), args.thread.name))
        t = threading.Thread(target=lambda: 1 / 0, name="failing")
        t.start()
        t.join()
        report(caught=caught)
        """
    )
    assert result_of(proc)["caught"] == [["ZeroDivisionError", "division by zero", "failing"]]


def test_unhandled_thread_exception_is_printed_by_the_default_hook():
    proc = run_script(
        """
        def fail():
            raise ValueError("boom in a thread")
        t = threading.Thread(target=fail, name="failing")
        t.start()
        t.join()
        report(done=True)
        """
    )
    result_of(proc, quiet=False)
    assert "Exception in thread failing" in proc.stderr
    assert "ValueError: boom in a thread" in proc.stderr


# -- interpreter exit --------------------------------------------------------


def test_interpreter_exit_waits_for_non_daemon_threads():
    proc = run_script(
        """
        def slow():
            time.sleep(0.3)
            print("non-daemon finished", hub_index() is not None, flush=True)
        threading.Thread(target=slow).start()
        print("main done", flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main done", "non-daemon finished True"]
    assert proc.stderr == ""


@pytest.mark.timeout(60)
def test_daemon_thread_does_not_block_exit_and_is_cancelled_silently():
    proc = run_script(
        """
        running = threading.Event()
        def forever():
            try:
                running.set()
                while True:
                    time.sleep(0.01)
            finally:
                print("daemon cancelled", flush=True)
        threading.Thread(target=forever, daemon=True).start()
        assert running.wait(20)
        print("main done", flush=True)
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main done", "daemon cancelled"]
    assert proc.stderr == ""


@pytest.mark.timeout(90)
def test_background_thread_keeps_running_while_run_serves_and_after():
    proc = run_script(
        """
        ticks = 0
        tick = threading.Condition()
        stop = threading.Event()
        def background():
            global ticks
            while not stop.is_set():
                time.sleep(0.005)
                with tick:
                    ticks += 1
                    tick.notify_all()
        def wait_ticks(n):
            with tick:
                start = ticks
                assert tick.wait_for(lambda: ticks >= start + n, timeout=20), "no ticks"
        bg = threading.Thread(target=background, name="bg")
        bg.start()
        bg_pool = None
        def main():
            # serving: the background thread ticks while run's pool works
            wait_ticks(5)
            greenpool.spawn(wait_ticks, 5).result(timeout=20)
            return greenpool.current_pool().name
        served_by = greenpool.run(main, size=2, name="served")
        alive_after_run = bg.is_alive()
        wait_ticks(5)  # still ticking once run's pool has shut down
        served_again = greenpool.run(main, size=2, name="served")
        stop.set()
        bg.join(20)
        report(served_by=[served_by, served_again], alive_after_run=alive_after_run,
               alive_at_end=bg.is_alive())
        """
    )
    values = result_of(proc)
    assert values["served_by"] == ["served", "served"]
    assert values["alive_after_run"] is True
    assert values["alive_at_end"] is False
    assert proc.stderr == ""


@pytest.mark.timeout(90)
def test_background_thread_keeps_running_while_a_server_serves():
    proc = run_script(
        """
        import signal
        import socket
        from gevent.server import StreamServer
        ticks = []
        tick = threading.Condition()
        stop = threading.Event()
        def background():
            while not stop.is_set():
                time.sleep(0.005)
                with tick:
                    ticks.append(hub_index())
                    tick.notify_all()
        bg = threading.Thread(target=background, name="bg", daemon=True)
        bg.start()
        def handle(sock, _address):
            with tick:
                start = len(ticks)
                ok = tick.wait_for(lambda: len(ticks) >= start + 3, timeout=20)
            sock.sendall(b"ticking\\n" if ok else b"stalled\\n")
            sock.close()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        server = StreamServer(listener, handle)
        answers = []
        def client():
            for _ in range(4):
                with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
                    answers.append(c.makefile("rb").readline().decode().strip())
            os.kill(os.getpid(), signal.SIGTERM)  # run(server) stops on SIGTERM
        from gevent.monkey import get_original
        get_original("_thread", "start_new_thread")(client, ())
        greenpool.run(server, size=2)
        with tick:
            start = len(ticks)
            after = tick.wait_for(lambda: len(ticks) >= start + 3, timeout=20)
        report(answers=answers, ticking_after=after, alive=bg.is_alive())
        """
    )
    values = result_of(proc)
    assert values["answers"] == ["ticking"] * 4
    assert values["ticking_after"] is True
    assert values["alive"] is True


def test_forked_child_starts_threads_on_a_fresh_default_pool():
    proc = run_script(
        """
        stop = threading.Event()
        background = threading.Thread(target=stop.wait, daemon=True)
        background.start()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            where = []
            t = threading.Thread(target=lambda: where.append(hub_index()))
            t.start()
            t.join()
            os.write(write_end, json.dumps(where).encode())
            os._exit(0)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        child = json.loads(os.read(read_end, 1000) or b"null")
        stop.set()
        background.join()
        report(status=status, child=child)
        """
    )
    values = result_of(proc)
    assert values["status"] == 0
    assert len(values["child"]) == 1 and values["child"][0] in range(4)


# -- GREENPOOL_HUBS --------------------------------------------------------------


def test_default_size_reads_greenpool_hubs(monkeypatch):
    monkeypatch.setenv(HUBS_ENV, "3")
    assert default_size() == 3
    monkeypatch.setenv(HUBS_ENV, " 12 ")
    assert default_size() == 12
    monkeypatch.delenv(HUBS_ENV)
    assert default_size() == (os.cpu_count() or 1)
    monkeypatch.setenv(HUBS_ENV, "")
    assert default_size() == (os.cpu_count() or 1)


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "2.5"])
def test_default_size_rejects_bad_greenpool_hubs(monkeypatch, bad):
    monkeypatch.setenv(HUBS_ENV, bad)
    with pytest.raises(ValueError, match=r"GREENPOOL_HUBS=.* positive integer") as info:
        default_size()
    assert repr(bad) in str(info.value)


def test_default_pool_size_from_greenpool_hubs_unpatched():
    proc = run_script(
        """
        import json
        import greenpool
        pool = greenpool.default_pool()
        print("RESULT " + json.dumps({"size": pool.size,
                                      "hubs": greenpool.spawn(lambda: 1).result(timeout=20)}))
        """,
        hubs="3",
        patched=False,
    )
    assert result_of(proc) == {"size": 3, "hubs": 1}


@pytest.mark.parametrize("bad", ["abc", "0"])
def test_bad_greenpool_hubs_is_a_clear_error_at_first_use_unpatched(bad):
    proc = run_script(
        """
        import json
        import greenpool  # importing is fine: the variable is read at first use
        try:
            greenpool.spawn(print, "never")
        except ValueError as exc:
            print("RESULT " + json.dumps({"error": str(exc)}))
        """,
        hubs=bad,
        patched=False,
    )
    error = result_of(proc)["error"]
    assert f"GREENPOOL_HUBS={bad!r}" in error
    assert "positive integer" in error


def test_bad_greenpool_hubs_fails_thread_start_patched():
    proc = run_script(
        """
        t = threading.Thread(target=print, args=("never",))
        try:
            t.start()
        except ValueError as exc:
            report(error=str(exc), listed=t in threading.enumerate())
        """,
        hubs="-1",
    )
    values = result_of(proc)
    assert "GREENPOOL_HUBS='-1'" in values["error"]
    assert values["listed"] is False
    assert "never" not in proc.stdout

"""Pool: construction, dispatch, spawn_on/broadcast, join, shutdown semantics."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Executor

import gevent
import pytest

import greenpool
from greenpool._native import get_ident
from tests.helpers import run_python


def hub_index():
    return greenpool.current_hub().index


# -- construction and bad arguments -------------------------------------------


def test_pool_is_an_executor_with_size_hubs(pool):
    assert isinstance(pool, Executor)
    assert pool.size == 4
    assert [h.index for h in pool.hubs] == [0, 1, 2, 3]
    assert [h.name for h in pool.hubs] == ["test-0", "test-1", "test-2", "test-3"]


def test_default_size_is_cpu_count(make_pool):
    import os

    assert make_pool().size == (os.cpu_count() or 1)


@pytest.mark.parametrize("size, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                         ("2", TypeError), (True, TypeError)])
def test_bad_size_raises_at_the_call(size, error):
    with pytest.raises(error, match="size"):
        greenpool.Pool(size)


def test_unknown_dispatch_strategy_lists_the_choices():
    with pytest.raises(ValueError, match="round_robin"):
        greenpool.Pool(1, dispatch="random")


def test_bad_max_pending_and_policy_raise():
    with pytest.raises(ValueError, match="max_pending"):
        greenpool.Pool(1, max_pending=0)
    with pytest.raises(ValueError, match="full_policy"):
        greenpool.Pool(1, full_policy="drop")


def test_spawning_a_non_callable_raises_type_error(pool):
    with pytest.raises(TypeError, match="callable"):
        pool.spawn(42)
    with pytest.raises(TypeError, match="callable"):
        greenpool.spawn("nope")
    with pytest.raises(TypeError, match="callable"):
        pool.broadcast(None)


def test_spawn_on_validates_the_index(pool):
    with pytest.raises(IndexError, match="out of range"):
        pool.spawn_on(4, hub_index)
    with pytest.raises(TypeError, match="int"):
        pool.spawn_on("0", hub_index)
    assert pool.spawn_on(2, hub_index).result(5) == 2
    assert pool.spawn_on(-1, hub_index).result(5) == 3


# -- threads and hooks -----------------------------------------------------------


def test_each_hub_is_its_own_native_thread(pool):
    idents = [f.result(5) for f in pool.broadcast(get_ident)]
    assert len(set(idents)) == 4
    assert get_ident() not in idents
    assert idents == [h.thread_ident for h in pool.hubs]


def test_on_start_and_on_stop_run_inside_each_hub_thread():
    started, stopped = [], []
    p = greenpool.Pool(
        3,
        on_start=lambda hub: started.append((hub.index, get_ident() == hub.thread_ident)),
        on_stop=lambda hub: stopped.append((hub.index, get_ident() == hub.thread_ident)),
    )
    p.shutdown(wait=True)
    assert sorted(started) == [(0, True), (1, True), (2, True)]
    assert sorted(stopped) == [(0, True), (1, True), (2, True)]


def test_on_start_failure_fails_pool_creation_and_stops_started_hubs():
    stopped = []

    def on_start(hub):
        if hub.index == 1:
            raise RuntimeError("no database")

    with pytest.raises(RuntimeError, match="no database"):
        greenpool.Pool(3, on_start=on_start, on_stop=lambda hub: stopped.append(hub.index))
    assert stopped == [0]


# -- dispatch ---------------------------------------------------------------


def test_round_robin_goes_0_to_n_minus_1_and_wraps(pool):
    futures = [pool.spawn(hub_index) for _ in range(10)]
    assert [f.result(5) for f in futures] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]


def test_least_loaded_picks_the_hub_with_fewest_live_tasks(make_pool):
    p = make_pool(3, dispatch="least_loaded")
    release = threading.Event()
    blockers = [p.spawn_on(0, greenpool.blocking, release.wait, 10) for _ in range(2)]
    blockers.append(p.spawn_on(1, greenpool.blocking, release.wait, 10))
    assert p.spawn(hub_index).result(5) == 2
    release.set()
    for b in blockers:
        b.result(5)


def test_broadcast_runs_once_on_every_hub(pool):
    assert [f.result(5) for f in pool.broadcast(hub_index)] == [0, 1, 2, 3]


def test_map_preserves_order(pool):
    assert list(pool.map(lambda x: x * x, range(20))) == [x * x for x in range(20)]


# -- results and failures ------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom("x"), SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_any_base_exception_reaches_the_future_and_the_hub_survives(make_pool, exc):
    p = make_pool(1)

    def fail():
        raise exc

    f = p.spawn(fail)
    assert f.exception(5) is exc
    with pytest.raises(type(exc)):
        f.result()
    assert p.spawn(lambda: "still serving").result(5) == "still serving"


def test_unretrieved_exception_is_logged_once(make_pool, caplog):
    import gc

    p = make_pool(1)

    def fail():
        raise Boom("nobody looked")

    f = p.spawn(fail)
    p.join(5)
    del f
    gc.collect()
    records = [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert len(records) == 1
    assert "Boom" in (records[0].exc_text or "") or records[0].exc_info[0] is Boom


def test_retrieved_exception_is_not_logged(make_pool, caplog):
    import gc

    p = make_pool(1)
    f = p.spawn(lambda: 1 / 0)
    assert isinstance(f.exception(5), ZeroDivisionError)
    del f
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# -- join ------------------------------------------------------------------


def test_join_waits_for_children_spawned_by_tasks(pool):
    done = []

    def child(i):
        gevent.sleep(0.001)
        done.append(i)

    def parent(i):
        greenpool.spawn(child, i)

    for i in range(20):
        pool.spawn(parent, i)
    assert pool.join(10)
    assert sorted(done) == list(range(20))
    assert len(pool) == 0


def test_join_times_out_while_a_task_runs(pool):
    release = threading.Event()
    f = pool.spawn(greenpool.blocking, release.wait, 10)
    assert pool.join(timeout=0.05) is False
    release.set()
    assert pool.join(10) is True
    assert f.done()


def test_join_inside_the_pool_raises(pool):
    f = pool.spawn(pool.join)
    with pytest.raises(RuntimeError, match="wait for itself"):
        f.result(5)


# -- shutdown ---------------------------------------------------------------


def test_shutdown_wait_runs_every_spawned_task_to_the_end(make_pool):
    p = make_pool(2)
    done = []

    def task(i):
        gevent.sleep(0.001)
        greenpool.spawn(done.append, ("child", i))
        done.append(i)

    futures = [p.spawn(task, i) for i in range(50)]
    p.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in futures)
    assert sorted(x for x in done if isinstance(x, int)) == list(range(50))
    assert len([x for x in done if isinstance(x, tuple)]) == 50
    assert all(not h.is_alive() for h in p.hubs)


def test_spawn_after_shutdown_raises_runtime_error(make_pool):
    p = make_pool(1)
    p.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        p.spawn(hub_index)


def test_shutdown_cancel_futures_kills_running_and_pending_tasks(make_pool):
    p = make_pool(2)
    started = threading.Event()
    cleaned, begun = [], []

    def forever():
        begun.append(1)
        if len(begun) == 4:
            started.set()
        try:
            gevent.sleep(60)
        finally:
            cleaned.append(1)

    running = [p.spawn(forever) for _ in range(4)]
    assert started.wait(5)
    pending = [p.spawn(forever) for _ in range(4)]
    p.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    assert all(f.cancelled() for f in running)
    # every task that started (a "pending" one may have begun already) was unwound
    assert len(cleaned) == len(begun) >= 4
    with pytest.raises(CancelledError):
        running[0].result()


def test_shutdown_leaves_no_future_pending_under_load(make_pool):
    p = make_pool(4)
    futures = [p.spawn(gevent.sleep, 0.01 * (i % 3)) for i in range(500)]
    p.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)


def test_shutdown_wait_inside_the_pool_raises(pool):
    f = pool.spawn(pool.shutdown)
    with pytest.raises(RuntimeError, match="wait for itself"):
        f.result(5)


def test_context_manager_shuts_down_and_waits():
    with greenpool.Pool(2) as p:
        f = p.spawn(lambda: (gevent.sleep(0.01), "slept")[1])
    assert f.result(0) == "slept"
    assert all(not h.is_alive() for h in p.hubs)


def test_shutdown_runs_each_loop_until_idle_including_plain_gevent_greenlets(make_pool):
    p = make_pool(1)
    done = []

    def start_background():
        gevent.spawn(lambda: (gevent.sleep(0.02), done.append("background")))

    p.spawn(start_background).result(5)
    p.shutdown(wait=True)
    assert done == ["background"]


# -- backpressure ----------------------------------------------------------


def test_full_policy_raise_fails_fast_when_every_hub_is_at_max_pending(make_pool):
    p = make_pool(1, max_pending=2, full_policy="raise")
    release, started = threading.Event(), threading.Event()

    def block():
        started.set()
        release.wait(10)

    blocker = p.spawn(block)  # holds the hub itself: nothing queued after it can start
    assert started.wait(5)
    p.spawn(hub_index)
    p.spawn(hub_index)
    assert p.full()
    with pytest.raises(greenpool.PoolFull, match="max_pending"):
        p.spawn(hub_index)
    release.set()
    blocker.result(5)


def test_full_policy_block_waits_for_room_and_loses_nothing(make_pool):
    p = make_pool(2, max_pending=3)
    results = []
    futures = []

    def producer():
        for i in range(200):
            futures.append(p.spawn(results.append, i))

    t = threading.Thread(target=producer)
    t.start()
    t.join(20)
    assert not t.is_alive()
    p.join(10)
    assert sorted(results) == list(range(200))


def test_cancelling_shutdown_also_kills_greenlets_the_pool_did_not_start(make_pool):
    """A stray gevent.spawn'd greenlet blocked forever must not keep a hub alive."""
    p = make_pool(2)
    cleaned = []

    def start_strays():
        def stray():
            try:
                gevent.sleep(3600)
            finally:
                cleaned.append(greenpool.current_hub().index)

        gevent.spawn(stray)

    for f in p.broadcast(start_strays):
        f.result(5)
    p.shutdown(wait=True, cancel_futures=True)
    assert sorted(cleaned) == [0, 1]
    assert all(not h.is_alive() for h in p.hubs)


@pytest.mark.parametrize("cancel_futures", [False, True])
def test_shutdown_abandoning_strays_stops_the_hubs_without_running_them_again(
    make_pool, cancel_futures
):
    """strays="abandon": daemon threads at exit; a catch-all loop is never woken to log."""
    p = make_pool(2)
    woken = []

    def start_strays():
        def background_loop():  # python-engineio's service task: catches everything
            while True:
                try:
                    gevent.sleep(3600)
                except BaseException as exc:
                    woken.append(type(exc).__name__)

        gevent.spawn(background_loop)

    for f in p.broadcast(start_strays):
        f.result(5)
    p.shutdown(wait=True, cancel_futures=cancel_futures, strays="abandon")
    assert all(not h.is_alive() for h in p.hubs)
    assert woken == []


def test_abandoning_strays_after_an_earlier_shutdown_still_stops_the_hubs(make_pool):
    p = make_pool(1)
    p.broadcast(lambda: gevent.spawn(gevent.sleep, 3600))[0].result(5)
    p.shutdown(wait=False)  # retires the hub; the stray keeps its loop running
    p.shutdown(wait=True, strays="abandon")
    assert not p.hubs[0].is_alive()


def test_shutdown_refuses_an_unknown_strays_policy_before_doing_anything(make_pool):
    p = make_pool(1)
    with pytest.raises(ValueError, match="strays must be 'kill' or 'abandon', got 'ignore'"):
        p.shutdown(strays="ignore")
    assert p.spawn(lambda: 42).result(5) == 42  # still running


class _LazyProxy:
    """Answers ``__class__`` by running code, as Django's ``SimpleLazyObject`` does."""

    evaluated = 0

    @property  # type: ignore[misc]
    def __class__(self):
        _LazyProxy.evaluated += 1
        raise RuntimeError("a lazy proxy was evaluated by greenpool")


def test_killing_strays_never_evaluates_lazy_proxies_on_the_heap(make_pool):
    """The stray hunt walks the heap by type(): a proxy's __class__ runs no code in the loop."""
    proxies = [_LazyProxy() for _ in range(3)]
    p = make_pool(2)
    strays_started = []

    def start_stray():
        gevent.spawn(gevent.sleep, 3600)
        strays_started.append(True)

    for f in p.broadcast(start_stray):
        f.result(5)
    p.shutdown(wait=True, cancel_futures=True)
    assert strays_started == [True, True]
    assert all(not h.is_alive() for h in p.hubs)  # the strays were found and killed
    assert _LazyProxy.evaluated == 0
    assert len(proxies) == 3


def test_waiting_inside_a_hub_loop_callback_raises_instead_of_stalling(pool):
    box = {}
    done = threading.Event()

    def in_callback():
        try:
            box["f"].result(1)
        except RuntimeError as exc:
            box["error"] = str(exc)
        done.set()

    box["f"] = pool.spawn(gevent.sleep, 0.05)
    pool.hubs[0].call_soon_threadsafe(in_callback)
    assert done.wait(5)
    assert "event loop" in box["error"]


def test_cpu_affinity_pins_every_hub_thread_and_only_them(make_pool):
    import os

    cpus = sorted(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    p = make_pool(2, cpu_affinity={cpus[0]})
    assert [f.result(5) for f in p.broadcast(os.sched_getaffinity, 0)] == [{cpus[0]}] * 2
    assert os.sched_getaffinity(0) == before


@pytest.mark.parametrize("bad, error", [(set(), ValueError), ({10_000}, ValueError),
                                        (5, TypeError), ({"0"}, ValueError)])
def test_bad_cpu_affinity_raises_at_the_call(bad, error):
    with pytest.raises(error, match="cpu_affinity"):
        greenpool.Pool(1, cpu_affinity=bad)


def test_interpreter_exit_cancels_tasks_still_running_and_unwinds_them():
    """A pool left running at exit is shut down with cancel_futures: finally blocks run."""
    proc = run_python(
        """
        import threading, gevent, greenpool
        pool = greenpool.Pool(2)
        started = [threading.Event(), threading.Event()]
        def forever(i):
            started[i].set()
            try:
                gevent.sleep(60)
            finally:
                print("unwound", flush=True)
        futures = [pool.spawn(forever, i) for i in range(2)]
        assert all(e.wait(5) for e in started)
        print("exiting", flush=True)
        """,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    # two hub threads print at once: count, their lines may interleave
    assert proc.stdout.startswith("exiting") and proc.stdout.count("unwound") == 2


def test_a_stopped_hubs_ident_reused_by_a_new_thread_is_not_taken_for_the_hub():
    # Native thread idents are reused once a thread ends; a control call from
    # a thread that got the stopped hub's ident used to reach for its loop
    # (None by then) instead of being dropped.
    pool = greenpool.Pool(1)
    hub = pool.hubs[0]
    old_ident = pool.spawn(get_ident).result(timeout=10)
    pool.shutdown(wait=True)
    assert hub.wait_stopped(10)
    errors, reused = [], []

    def control_call_from_a_new_thread(done):
        try:
            reused.append(get_ident() == old_ident)
            hub.call_soon_threadsafe(print, "never runs")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    for _ in range(20):
        done = threading.Event()
        threading.Thread(target=control_call_from_a_new_thread, args=(done,)).start()
        assert done.wait(10)
        if reused[-1]:
            break
    assert errors == []
    assert hub.thread_ident is None

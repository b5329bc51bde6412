"""App threads: a bounded number of requests in the app at once, each on a long-lived greenlet."""

from __future__ import annotations

import socket
import threading

import gevent
import gevent.event
import gevent.local
import pytest

import greenpool
from greenpool import _patchstate, wsgi
from greenpool.__main__ import app_thread_settings, build_parser
from greenpool.__main__ import main as cli_main
from greenpool.http.app_threads import (
    APP_THREADS_ENV,
    DEFAULT_APP_THREADS,
    WAIT_TIMEOUT_ENV,
    AppThreads,
    AppThreadsBusy,
    settings_from_env,
)
from tests.procs import get

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def serve(make_pool):
    """wsgi.serve on a pool of ``hubs`` hubs; servers stopped afterwards."""
    started = []

    def start(app, hubs=1, **options):
        server = wsgi.serve(app, pool=make_pool(hubs), **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=1)


class Gate:
    """Requests enter, count themselves, and wait until the test opens the gate."""

    def __init__(self, open_at: int) -> None:
        self.lock = threading.Lock()  # native: the app runs on hub threads
        self.inside = 0
        self.most = 0
        self.open_at = open_at
        self.opened = greenpool.Event()
        self.first_in = greenpool.Event()

    def app(self, environ, start_response):
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.first_in.set()
            if self.inside >= self.open_at:
                self.opened.set()
        try:
            self.opened.wait()
        finally:
            with self.lock:
                self.inside -= 1
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]


def get_at_once(address, clients: int) -> list:
    """``clients`` GETs, each from a thread of its own, all started together."""
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(get(address)))
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return results


def test_requests_in_the_app_at_once_never_exceed_app_threads(serve):
    gate = Gate(open_at=4)
    server = serve(gate.app, app_threads=4)
    assert get_at_once(server.address, 12) == [(200, b"ok")] * 12
    assert gate.most == 4  # reached (12 clients at once), never passed


def test_without_app_threads_every_connection_calls_the_app_at_once(serve):
    gate = Gate(open_at=12)  # opens only if all 12 are inside together
    server = serve(gate.app, app_threads=None)
    assert get_at_once(server.address, 12) == [(200, b"ok")] * 12
    assert gate.most == 12


def per_thread_resource_app():
    """An app that opens one "connection" per thread, as Django does per thread."""
    local = gevent.local.local()  # what threading.local is after monkey patching
    opened = []

    def app(environ, start_response):
        if not hasattr(local, "connection"):
            local.connection = len(opened)
            opened.append(gevent.getcurrent())
        body = str(local.connection).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app, opened


def test_thread_locals_live_on_the_app_thread_and_are_reused_by_later_connections(serve):
    app, opened = per_thread_resource_app()
    server = serve(app, app_threads=2)
    bodies = [get(server.address)[1] for _ in range(10)]  # ten connections, one after another
    assert bodies == [b"0"] * 10
    assert len(opened) == 1  # one app thread served them all (the warmest is taken first)


def test_a_greenlet_per_connection_opens_a_resource_per_connection(serve):
    app, opened = per_thread_resource_app()
    server = serve(app, app_threads=None)
    bodies = [get(server.address)[1] for _ in range(10)]
    assert bodies == [str(i).encode() for i in range(10)]


def test_a_request_that_waits_too_long_gets_503_naming_the_knob(serve):
    gate = Gate(open_at=2)  # the second request never gets in: the gate stays shut
    server = serve(gate.app, app_threads=1, app_wait_timeout=0.2)
    first = []
    holder = threading.Thread(target=lambda: first.append(get(server.address)))
    holder.start()
    assert gate.first_in.wait(10)  # it holds the only app thread until the gate opens
    status, body = get(server.address)
    assert status == 503
    assert b"--app-threads" in body and b"GREENPOOL_APP_THREADS" in body
    gate.opened.set()
    holder.join(10)
    assert first == [(200, b"ok")]


def test_an_app_failure_on_an_app_thread_is_a_500_and_the_thread_serves_on(serve):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("app exploded")
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app, app_threads=1)
    assert get(server.address, "/boom")[0] == 500
    assert get(server.address, "/") == (200, b"ok")


def test_stopping_the_server_unwinds_a_request_running_on_an_app_thread(serve):
    entered = greenpool.Event()
    unwound = greenpool.Event()
    never = greenpool.Event()

    def app(environ, start_response):
        entered.set()
        try:
            never.wait()
        finally:
            unwound.set()
        start_response("200 OK", [])
        return [b""]

    server = serve(app, app_threads=1)
    sock = socket.create_connection(server.address, timeout=10)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(10)
        server.stop(timeout=0.1)  # the request's grace period ends: its connection is killed
        assert unwound.wait(10)
    finally:
        sock.close()


@pytest.mark.parametrize(("count", "hubs", "sizes"), [
    (5, 2, [3, 2]), (64, 3, [22, 21, 21]), (64, 4, [16] * 4), (2, 3, [1, 1, 1]),
])
def test_app_threads_are_split_over_the_hubs_keeping_the_total(make_pool, count, hubs, sizes):
    """The total stays what the app was sized for (a pool of 64 never sees 66), one per hub
    at least."""
    threads = AppThreads(count)
    pool = make_pool(hubs)
    assert [f.result(5) for f in pool.broadcast(lambda: threads._of_this_hub().size)] == sizes


def test_app_threads_run_outside_a_pool_too():
    threads = AppThreads(1)
    result = gevent.spawn(threads.run, lambda a, b: a + b, 2, 3).get(timeout=5)
    assert result == 5


def test_a_busy_app_thread_makes_the_next_caller_wait_in_order():
    threads = AppThreads(1, wait_timeout=None)
    release = gevent.event.Event()
    order = []

    def work(name):
        order.append(name)
        release.wait()
        return name

    first = gevent.spawn(threads.run, work, "a")
    gevent.sleep(0)  # "a" is running, holding the only app thread
    others = [gevent.spawn(threads.run, work, name) for name in "bc"]
    gevent.sleep(0)
    assert order == ["a"]
    release.set()
    assert [g.get(timeout=5) for g in (first, *others)] == ["a", "b", "c"]
    assert order == ["a", "b", "c"]


def test_app_threads_busy_is_raised_after_the_wait_timeout():
    threads = AppThreads(1, wait_timeout=0.05)
    release = gevent.event.Event()
    holder = gevent.spawn(threads.run, release.wait)
    gevent.sleep(0)
    with pytest.raises(AppThreadsBusy, match="--app-wait-timeout"):
        threads.run(lambda: None)
    release.set()
    holder.get(timeout=5)


def test_auto_means_app_threads_only_after_greenpool_monkey_patching(monkeypatch):
    monkeypatch.setattr(_patchstate, "patched", False)
    assert wsgi.app_threads_for("auto") is None
    monkeypatch.setattr(_patchstate, "patched", True)
    threads = wsgi.app_threads_for("auto")
    assert threads is not None and threads.count == DEFAULT_APP_THREADS


@pytest.mark.parametrize(("value", "error", "match"), [
    (0, ValueError, ">= 1"),
    (-3, ValueError, ">= 1"),
    (True, TypeError, "must be an int"),
    (2.5, TypeError, "must be an int"),
    ("many", ValueError, "'auto'"),
])
def test_bad_app_threads_raise_at_the_call(value, error, match):
    with pytest.raises(error, match=match):
        wsgi.serve(lambda e, s: [], app_threads=value)


@pytest.mark.parametrize(("value", "error"), [
    (0, ValueError), (-1, ValueError), (float("inf"), ValueError), ("30", TypeError),
])
def test_bad_app_wait_timeouts_raise_at_the_call(value, error):
    with pytest.raises(error, match="app_wait_timeout"):
        wsgi.serve(lambda e, s: [], app_threads=4, app_wait_timeout=value)


def test_settings_from_the_environment_and_their_errors():
    assert settings_from_env({}) == ("auto", 30.0)
    assert settings_from_env({APP_THREADS_ENV: "16", WAIT_TIMEOUT_ENV: "2.5"}) == (16, 2.5)
    assert settings_from_env({APP_THREADS_ENV: "0", WAIT_TIMEOUT_ENV: "none"}) == (None, None)
    with pytest.raises(ValueError, match=APP_THREADS_ENV):
        settings_from_env({APP_THREADS_ENV: "lots"})
    with pytest.raises(ValueError, match=WAIT_TIMEOUT_ENV):
        settings_from_env({WAIT_TIMEOUT_ENV: "-1"})


def test_the_command_line_refuses_a_bad_app_threads_value(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["wsgi", "--app-threads", "lots", "examples.wsgi_hello:app"])
    assert exit_info.value.code == 2
    assert "--app-threads" in capsys.readouterr().err


def test_the_command_line_names_a_bad_environment_setting(monkeypatch, capsys):
    monkeypatch.setenv(APP_THREADS_ENV, "-2")
    assert cli_main(["wsgi", "examples.wsgi_hello:app"]) == 2
    assert APP_THREADS_ENV in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "env", "expected"), [
    ([], {}, ("auto", 30.0)),
    ([], {APP_THREADS_ENV: "16", WAIT_TIMEOUT_ENV: "5"}, (16, 5.0)),
    (["--app-threads", "8", "--app-wait-timeout", "2"], {APP_THREADS_ENV: "16"}, (8, 2.0)),
    # 0 on the command line means no limit, whatever the environment says
    (["--app-threads", "0", "--app-wait-timeout", "0"],
     {APP_THREADS_ENV: "16", WAIT_TIMEOUT_ENV: "5"}, (None, None)),
])
def test_the_command_line_overrides_the_environment(monkeypatch, argv, env, expected):
    for name in (APP_THREADS_ENV, WAIT_TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["wsgi", *argv, "examples.wsgi_hello:app"])
    assert app_thread_settings(args) == expected

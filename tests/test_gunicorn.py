"""greenpool.gunicorn.Worker started by a real gunicorn master, answering real HTTP."""

from __future__ import annotations

import http.client
import signal
import ssl
import textwrap
import threading
import time

import pytest

from tests.helpers import make_certificate, raw_request, run_python
from tests.procs import ServerProcess, check_graceful_sigterm, get, python_cmd

pytestmark = pytest.mark.timeout(45)

APP = textwrap.dedent(
    '''
    import os
    import time

    from gevent.monkey import get_original

    import greenpool

    native_sleep = get_original("time", "sleep")


    def stream():
        yield b"first\\n"
        time.sleep(0.5)  # patched by the worker: cooperative
        yield b"second\\n"


    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/patched":
            from greenpool import monkey

            body = str(monkey.is_patched()).encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        if path == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return stream()
        if path == "/hog":
            native_sleep(float(environ["QUERY_STRING"]))  # blocks the whole hub
        if path == "/hold":  # holds its app thread until the file named in the query exists
            while not os.path.exists(environ["QUERY_STRING"]):
                time.sleep(0.01)  # patched: cooperative
        hub = greenpool.current_hub()
        body = f"{os.getpid()} {hub.index} {hub.pool.size}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    '''
)


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "hello_app.py").write_text(APP)
    return tmp_path


def start_gunicorn(app_dir, *options: str) -> tuple[ServerProcess, tuple[str, int]]:
    cmd = python_cmd(
        "-m", "gunicorn", "-k", "greenpool.gunicorn.Worker", "-b", "127.0.0.1:0",
        "--no-control-socket", *options, "hello_app:app",
    )
    server = ServerProcess(cmd, cwd=app_dir)
    try:
        port = int(server.wait_for(r"Listening at: https?://127\.0\.0\.1:(\d+)").group(1))
        server.wait_for(r"Booting worker with pid")
    except BaseException:
        server.__exit__(None, None, None)
        raise
    return server, ("127.0.0.1", port)


def get_ok(address, path="/"):
    """GET that retries a refused connect while the worker boots (bounded)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            status, body = get(address, path)
        except (ConnectionError, http.client.RemoteDisconnected):
            if time.monotonic() > deadline:
                raise
            continue
        assert status == 200, body
        return body.decode()


def test_worker_serves_requests_on_every_hub(app_dir):
    server, address = start_gunicorn(app_dir, "-w", "1", "--threads", "2")
    with server:
        answers: list[tuple[str, str, str]] = []
        failures: list[BaseException] = []
        lock = threading.Lock()
        deadline = time.monotonic() + 15

        def client():
            try:
                while time.monotonic() < deadline:
                    with lock:
                        if len({index for _, index, _ in answers}) == 2:
                            return
                    answer = tuple(get_ok(address).split())
                    with lock:
                        answers.append(answer)
            except BaseException as exc:
                failures.append(exc)

        clients = [threading.Thread(target=client) for _ in range(8)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        assert not failures, failures
        assert {index for _, index, _ in answers} == {"0", "1"}
        assert {size for _, _, size in answers} == {"2"}
        assert len({pid for pid, _, _ in answers}) == 1
        assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.output


def test_sigterm_finishes_in_flight_request_and_closes_idle_keepalive(app_dir):
    server, address = start_gunicorn(
        app_dir, "-w", "1", "--threads", "2", "--graceful-timeout", "30"
    )
    with server:
        get_ok(address)
        check_graceful_sigterm(server, address)
    assert "Traceback" not in server.output


def test_max_requests_restarts_the_worker(app_dir):
    server, address = start_gunicorn(
        app_dir, "-w", "1", "--threads", "2", "--max-requests", "3"
    )
    with server:
        pids = {get_ok(address).split()[0] for _ in range(3)}
        assert len(pids) == 1
        server.wait_for(r"Autorestarting worker")
        deadline = time.monotonic() + 15
        while get_ok(address).split()[0] in pids:
            assert time.monotonic() < deadline, server.output
        assert server.stop(signal.SIGINT) == 0  # quick stop: the worker gets SIGQUIT


def test_heartbeat_keeps_idle_worker_and_a_stuck_hub_gets_it_restarted(app_dir):
    server, address = start_gunicorn(app_dir, "-w", "1", "--threads", "2", "--timeout", "2")
    with server:
        first = get_ok(address).split()[0]
        # idle for well past --timeout: the heartbeat keeps the worker
        with pytest.raises(AssertionError):
            server.wait_for(r"WORKER TIMEOUT", timeout=3.5)
        assert get_ok(address).split()[0] == first
        # a hub blocked natively for longer than --timeout stops the heartbeat
        def hog():
            try:
                get(address, "/hog?5")
            except (OSError, http.client.HTTPException):
                pass  # the worker is killed under this request: expected

        threading.Thread(target=hog, daemon=True).start()
        server.wait_for(r"WORKER TIMEOUT", timeout=15)
        deadline = time.monotonic() + 15
        while get_ok(address).split()[0] == first:  # the replacement worker answers
            assert time.monotonic() < deadline, server.output
        assert server.stop(signal.SIGTERM) == 0


def test_certfile_serves_https_and_a_bad_certificate_stops_gunicorn(app_dir):
    cert, key = make_certificate(app_dir)
    server, address = start_gunicorn(
        app_dir, "--threads", "2", "--certfile", str(cert), "--keyfile", str(key)
    )
    with server:
        context = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection(*address, context=context, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read().split()[2] == b"2"
        conn.close()
        assert server.stop(signal.SIGTERM) == 0

    (app_dir / "bad.pem").write_text("not a certificate\n")
    cmd = python_cmd(
        "-m", "gunicorn", "-k", "greenpool.gunicorn.Worker", "-b", "127.0.0.1:0",
        "--no-control-socket", "--certfile", "bad.pem", "--keyfile", "bad.pem", "hello_app:app",
    )
    with ServerProcess(cmd, cwd=app_dir) as bad:
        assert bad.wait_exit(timeout=20) == 3  # gunicorn's "worker failed to boot"
        assert "SSLError" in bad.output


@pytest.mark.timeout(60)
def test_keep_alive_and_request_limits_are_honoured_like_the_gevent_worker(app_dir):
    server, address = start_gunicorn(
        app_dir, "-w", "1", "--threads", "2", "--keep-alive", "1",
        "--limit-request-line", "100", "--limit-request-fields", "5",
        "--limit-request-field_size", "60",
    )
    with server:
        get_ok(address)
        # an idle keep-alive connection is closed after --keep-alive seconds
        began = time.monotonic()
        reply = raw_request(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 ") and time.monotonic() - began < 8
        # so is a client that never finishes its request line
        assert raw_request(address, b"GET / HT") == b""
        # the RFC's statuses (gunicorn's own parser answers 400 to all three)
        long_line = b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        assert raw_request(address, long_line).startswith(b"HTTP/1.1 414 ")
        many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X%d: y\r\n" % i for i in range(8)) + b"\r\n"
        assert raw_request(address, many).startswith(b"HTTP/1.1 400 ")
        big = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 100 + b"\r\n\r\n"
        assert raw_request(address, big).startswith(b"HTTP/1.1 431 ")
        # within the limits: served
        fine = b"GET /" + b"a" * 50 + b" HTTP/1.1\r\nHost: x\r\nX: " + b"y" * 40 + b"\r\n"
        assert raw_request(address, fine + b"Connection: close\r\n\r\n").startswith(
            b"HTTP/1.1 200 ")
        assert server.stop(signal.SIGTERM) == 0


@pytest.mark.timeout(60)
def test_the_response_that_reaches_max_requests_says_connection_close(app_dir):
    server, address = start_gunicorn(
        app_dir, "-w", "1", "--threads", "1", "--max-requests", "3", "--keep-alive", "5"
    )
    with server:
        get_ok(address)  # 1: the worker is up
        conn = http.client.HTTPConnection(*address, timeout=10)
        try:
            conn.request("GET", "/")
            first = conn.getresponse()
            first.read()
            assert first.status == 200 and first.getheader("Connection") is None
            conn.request("GET", "/")
            last = conn.getresponse()
            last.read()
            assert last.status == 200 and last.getheader("Connection") == "close"
        finally:
            conn.close()
        server.wait_for(r"Autorestarting worker")
        assert server.stop(signal.SIGINT) == 0


def test_worker_patches_with_greenpool_monkey_and_writes_gunicorns_access_log(app_dir):
    server, address = start_gunicorn(app_dir, "--threads", "2", "--access-logfile", "-")
    with server:
        assert get_ok(address, "/patched?x=1") == "True"
        server.wait_for(r'"GET /patched\?x=1 HTTP/1\.1" 200 4 ')
        assert server.stop(signal.SIGTERM) == 0



def test_each_hub_accepts_one_connection_per_wake_up():
    """Every hub watches the same listener; gevent's default max_accept (100)
    let the first hub to wake take a whole burst of new connections (wrk's 32
    all on one of 4 hubs, measured by benchmarks/legacy.py: 239-417 req/s with
    2-4 hubs busy; with one accept per wake-up all 4 busy, 355-422 req/s).
    A burst's spread also depends on which hub thread gets the GIL, so it is
    measured by the benchmark, not asserted here."""
    from greenpool.gunicorn import _Server

    assert _Server.max_accept == 1


def test_a_missing_worker_dependency_names_the_extra_that_installs_it():
    """gunicorn's gevent worker module imports packaging, which gunicorn does not require."""
    proc = run_python("""
        import sys
        sys.modules["packaging"] = None  # as after `pip install greenpool gunicorn`
        try:
            import greenpool.gunicorn
        except ImportError as exc:
            print(exc.name, "|", exc)
        """)
    assert proc.returncode == 0, proc.stderr
    name, _, message = proc.stdout.strip().partition(" | ")
    assert name.split(".")[0] == "packaging"
    assert "pip install 'greenpool[gunicorn]'" in message


def test_the_worker_reads_its_app_threads_from_the_environment(app_dir):
    """GREENPOOL_APP_THREADS=1 (gunicorn --env): a second request waits, then gets its 503."""
    flag = app_dir / "release"
    server, address = start_gunicorn(app_dir, "--threads", "1",
                                     "--env", "GREENPOOL_APP_THREADS=1",
                                     "--env", "GREENPOOL_APP_WAIT_TIMEOUT=0.2")
    with server:
        get_ok(address)  # booted
        holder = http.client.HTTPConnection(*address, timeout=20)
        holder.request("GET", f"/hold?{flag}")
        deadline = time.monotonic() + 15
        while True:  # the holder is in the app once a second request is refused
            status, body = get(address)
            if status == 503 or time.monotonic() > deadline:
                break
        assert status == 503, body
        assert b"GREENPOOL_APP_THREADS" in body
        flag.write_text("")
        response = holder.getresponse()
        assert response.status == 200
        holder.close()
        assert server.stop() == 0


def test_a_bad_app_threads_setting_stops_gunicorn_naming_the_variable(app_dir):
    cmd = python_cmd("-m", "gunicorn", "-k", "greenpool.gunicorn.Worker", "-b", "127.0.0.1:0",
                     "--no-control-socket", "--env", "GREENPOOL_APP_THREADS=lots",
                     "hello_app:app")
    with ServerProcess(cmd, cwd=app_dir) as server:
        code = server.wait_exit(timeout=30)
    assert code != 0
    assert "GREENPOOL_APP_THREADS='lots'" in server.output

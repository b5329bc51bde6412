"""Legacy stdlib servers, unchanged, on every hub: the three examples/legacy_*.py scripts.

Each example patches with ``gevent.monkey.patch_all()`` and runs its stdlib
server once per hub on one SO_REUSEPORT port, so each runs as a subprocess;
this (unpatched) process is the client. The handlers report which hub accepted
the connection and which handled it, and the hub's native thread id.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import xmlrpc.client
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import run_python
from tests.procs import ServerProcess, python_cmd

# The stdlib servers honour allow_reuse_port (one server per hub, one port) from 3.11.
needs_reuse_port = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="socketserver's allow_reuse_port needs Python 3.11+"
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HUBS = 4
CONNECTIONS = 40


def http_where(port: int, i: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/item/{i}")
        resp = conn.getresponse()
        assert resp.status == 200
        answer = json.loads(resp.read())
    finally:
        conn.close()
    assert answer["path"] == f"/item/{i}"
    return answer


def tcp_where(port: int, i: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = sock.makefile("rwb")
        answers = []
        for n in range(3):  # several lines on one connection: one handler greenlet
            lines.write(f"hello {i}.{n}\n".encode())
            lines.flush()
            answers.append(json.loads(lines.readline()))
    assert [a["echo"] for a in answers] == [f"hello {i}.{n}" for n in range(3)]
    assert len({(a["handled_on"], a["native_thread"]) for a in answers}) == 1
    return answers[0]


def xmlrpc_where(port: int, i: int) -> dict:
    with xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/") as proxy:
        assert proxy.add(i, 1) == i + 1
    with xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/") as proxy:
        return proxy.where()


CASES = {
    "http.server": ("legacy_http_server.py", r"serving http://127\.0\.0\.1:(\d+)/", http_where),
    "socketserver": ("legacy_socketserver.py", r"serving tcp://127\.0\.0\.1:(\d+)", tcp_where),
    "xmlrpc.server": (
        "legacy_xmlrpc.py", r"serving xmlrpc http://127\.0\.0\.1:(\d+)/", xmlrpc_where,
    ),
}


@needs_reuse_port
@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(CASES))
def test_legacy_server_runs_unchanged_on_every_hub_and_stops_on_sigterm(case):
    script, banner, where = CASES[case]
    cmd = python_cmd(str(EXAMPLES / script), "--port", "0", "--hubs", str(HUBS))
    with ServerProcess(cmd) as server:
        port = int(server.wait_for(banner).group(1))
        answers = [where(port, i) for i in range(CONNECTIONS)]
        code = server.stop()
        output = server.output
    threads_of_hub = defaultdict(set)
    for answer in answers:
        # The patched "thread" handling a connection is a greenlet on the accepting hub.
        assert answer["handled_on"] == answer["accepted_on"], answer
        threads_of_hub[answer["handled_on"]].add(answer["native_thread"])
    assert len(threads_of_hub) >= 2, f"one hub served everything: {answers}"
    assert all(len(ids) == 1 for ids in threads_of_hub.values())  # a hub is one thread
    assert len({ids.pop() for ids in threads_of_hub.values()}) == len(threads_of_hub)
    assert code == 0, output
    assert "Traceback" not in output, output


@needs_reuse_port
@pytest.mark.timeout(60)
def test_legacy_socketserver_serves_many_idle_connections_at_once():
    """An idle client does not hold its hub: every patched "thread" waits cooperatively."""
    cmd = python_cmd(str(EXAMPLES / "legacy_socketserver.py"), "--port", "0", "--hubs", "2")
    with ServerProcess(cmd) as server:
        port = int(server.wait_for(CASES["socketserver"][1]).group(1))
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
        files = [s.makefile("rwb") for s in socks]
        try:
            for i, f in enumerate(reversed(files)):  # the newest connection first
                f.write(f"line {i}\n".encode())
                f.flush()
                assert json.loads(f.readline())["echo"] == f"line {i}"
        finally:
            for f, s in zip(files, socks, strict=True):
                f.close()
                s.close()
        # Closed first: a client still connected would keep its handler, and so
        # its hub, alive after SIGTERM (greenpool.run waits for every greenlet).
        assert server.stop() == 0, server.output


# -- patching order and hub-bound objects: faults with clear errors ------------------


def run_child(code: str) -> str:
    proc = run_python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


def test_patching_after_a_pool_started_raises_naming_the_fix_and_patches_nothing():
    out = run_child(
        """
        import greenpool
        from gevent import monkey
        pool = greenpool.Pool(2, name="early")
        try:
            monkey.patch_all()
        except greenpool.PatchingError as exc:
            message = str(exc)
        assert "patch_all() first" in message and "'early'" in message, message
        assert not monkey.is_module_patched("socket")
        assert not monkey.is_module_patched("threading")
        try:
            monkey.patch_socket()  # one module alone is refused too
        except greenpool.PatchingError:
            pass
        assert not monkey.is_module_patched("socket")
        assert pool.spawn(lambda: "still serving").result(5) == "still serving"
        pool.shutdown()
        monkey.patch_all()  # with no hub running it patches, refusal forgotten
        assert monkey.is_module_patched("socket") and monkey.is_module_patched("threading")
        print("OK")
        """
    )
    assert out == "OK"


def test_patching_twice_is_harmless_even_with_a_pool_running():
    out = run_child(
        """
        import warnings
        warnings.simplefilter("error")  # not even a warning
        from gevent import monkey
        monkey.patch_all()
        monkey.patch_all()
        import greenpool
        with greenpool.Pool(1) as pool:  # one hub: gevent's patching alone is then fine
            monkey.patch_all()  # nothing new to patch: allowed
            print(pool.spawn(lambda: "OK").result(5))
        """
    )
    assert out == "OK"


def test_a_native_lock_made_before_patching_deadlocks_its_hub():
    """Why late patching is refused: pre-patch objects stay native inside hubs."""
    out = run_child(
        """
        import os, threading
        lock = threading.Lock()  # native: made before patching
        from gevent import monkey
        monkey.patch_all()
        import time
        import greenpool

        def worker():
            with lock:
                time.sleep(0.01)  # patched: yields to the hub while holding the lock

        pool = greenpool.Pool(1)
        futures = [pool.spawn(worker) for _ in range(2)]
        try:
            futures[1].result(1)
        except greenpool.TimeoutError:
            print("hub deadlocked")
        os._exit(0)  # the hub thread can never finish
        """
    )
    assert out == "hub deadlocked"


def test_gevent_socket_used_from_another_hub_raises_wrong_hub_error_and_arguments_are_rebound():
    out = run_child(
        """
        import gevent.socket
        import greenpool

        with greenpool.Pool(2) as pool:
            a, b = pool.spawn_on(0, gevent.socket.socketpair).result(5)
            try:
                pool.spawn_on(1, lambda: a.recv(1)).result(5)  # a belongs to hub 0
            except greenpool.WrongHubError as exc:
                cause = exc.__cause__
                print(type(cause).__name__ + ":", str(cause).splitlines()[0])
                print("names the fix:", "greenpool.rebind" in str(exc))
            c, d = pool.spawn_on(0, gevent.socket.socketpair).result(5)
            d.sendall(b"x")
            # As a task argument the socket is rebound to hub 1 (greenpool.rebind).
            print(pool.spawn_on(1, lambda sock: sock.recv(1), c).result(5))
        """
    )
    assert out.splitlines() == [
        "error: Cannot switch to a different thread",
        "names the fix: True",
        "b'x'",
    ]


def test_subprocess_on_a_hub_needs_patch_all_subprocess_false_and_blocking():
    """Patched subprocess works only on the main thread's loop; the documented way out."""
    patched = run_child(
        """
        from gevent import monkey; monkey.patch_all()
        import subprocess, greenpool
        with greenpool.Pool(1) as pool:
            try:
                pool.spawn(subprocess.run, ["true"]).result(30)
            except TypeError as exc:
                print(exc)
        """
    )
    assert patched == "child watchers are only available on the default loop"
    unpatched = run_child(
        """
        from gevent import monkey; monkey.patch_all(subprocess=False)
        import os, subprocess, greenpool

        def echo(i):
            done = greenpool.blocking(subprocess.run, ["echo", str(i)],
                                      capture_output=True, text=True)
            return done.stdout.strip()

        pool = greenpool.Pool(2)
        try:
            # One after another on one hub: the same helper thread runs them all.
            print(" ".join(pool.spawn_on(0, echo, i).result(10) for i in range(4)))
            print(" ".join(f.result(10) for f in [pool.spawn(echo, i) for i in range(4, 8)]))
        except Exception as exc:
            print("stuck:", type(exc).__name__, flush=True)
            os._exit(1)
        pool.shutdown()
        """
    )
    assert unpatched.splitlines() == ["0 1 2 3", "4 5 6 7"]

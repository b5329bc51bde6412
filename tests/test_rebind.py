"""Connections crossing hubs: rebind(), automatic rebinding of socket arguments,
the seed's accept loop, and gevent servers using a Pool as their spawner."""

from __future__ import annotations

import socket as stdlib_socket
import ssl
import threading

import gevent
import pytest
from gevent import socket as gsocket
from gevent.server import StreamServer

import greenpool
from greenpool.errors import WrongHubError

from .helpers import make_certificate, run_python


def echo_once(conn):
    """Echo one message back, tagged with the hub that served it."""
    with conn:
        data = conn.recv(1024)
        conn.sendall(b"%d:%s" % (greenpool.current_hub().index, data))


def socketpair_on_hub():
    """A connected pair of gevent sockets created on the calling hub."""
    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = gsocket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return server, client


def test_socket_argument_spawned_onto_another_hub_is_rebound_and_works(pool):
    def make_and_hand_over():
        server, client = socketpair_on_hub()
        moved = pool.spawn_on(1, echo_once, server)
        client.sendall(b"ping")
        reply = client.recv(1024)
        client.close()
        moved.result()
        return reply

    assert pool.spawn_on(0, make_and_hand_over).result(10) == b"1:ping"


def test_rebind_returns_a_socket_on_the_calling_hub_and_detaches_the_old_one(pool):
    def on_hub_0():
        return socketpair_on_hub()

    server, client = pool.spawn_on(0, on_hub_0).result(10)

    def on_hub_1():
        moved = greenpool.rebind(server)
        assert moved is not server
        assert moved.hub is gevent.get_hub()
        assert moved.fileno() == server_fd
        return moved

    server_fd = server.fileno()
    moved = pool.spawn_on(1, on_hub_1).result(10)
    assert server.fileno() == -1
    server.close()  # a no-op: the old object must not close the moved descriptor
    with pytest.raises(WrongHubError, match="rebound"):
        server.recv(1)

    def talk():
        moved.sendall(b"over")
        data = moved.recv(16)
        moved.close()
        return data

    def other_side():
        client2 = greenpool.rebind(client)
        data = client2.recv(16)
        client2.sendall(data.upper())
        client2.close()

    side = pool.spawn_on(2, other_side)
    assert pool.spawn_on(1, talk).result(10) == b"OVER"
    side.result(10)


def test_rebind_on_the_owning_hub_returns_the_same_socket(pool):
    def same():
        server, client = socketpair_on_hub()
        try:
            return greenpool.rebind(server) is server
        finally:
            server.close()
            client.close()

    assert pool.spawn(same).result(10)


def test_rebind_refuses_non_gevent_sockets():
    with stdlib_socket.socket() as s, pytest.raises(TypeError, match="gevent socket"):
        greenpool.rebind(s)


def test_socket_files_are_refused_with_a_message_naming_the_fix(pool):
    def hand_over_file():
        server, client = socketpair_on_hub()
        try:
            pool.spawn_on(1, lambda f: f.read(), server.makefile("rb"))
        finally:
            server.close()
            client.close()

    with pytest.raises(TypeError, match="makefile"):
        pool.spawn_on(0, hand_over_file).result(10)


def test_rebind_refuses_a_socket_with_an_open_makefile(pool):
    """Its reference count would stay on the new object, which could then never close."""
    server, client = pool.spawn_on(0, socketpair_on_hub).result(10)
    reader = server.makefile("rb")

    def on_hub_1():
        with pytest.raises(WrongHubError, match="open makefile"):
            greenpool.rebind(server)
        reader.close()  # once the file is closed, the move is fine
        return greenpool.rebind(server)

    moved = pool.spawn_on(1, on_hub_1).result(10)

    def close_and_check():
        fd = moved.fileno()
        moved.close()
        return fd, moved.fileno()

    fd, after = pool.spawn_on(1, close_and_check).result(10)
    assert fd >= 0 and after == -1  # really closed

    def peer_sees_the_close():
        with client:
            client.settimeout(5)
            return client.recv(1)

    assert pool.spawn_on(0, peer_sees_the_close).result(10) == b""


def test_a_tls_connection_moved_between_hubs_keeps_its_session(pool, tmp_path):
    cert, key = make_certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))

    def serve_then_move():
        listener = gsocket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client_future = pool.spawn_on(2, tls_client, port)
        raw, _ = listener.accept()
        listener.close()
        conn = server_ctx.wrap_socket(raw, server_side=True)  # handshake on hub 0
        first = conn.recv(64)
        conn.sendall(b"hub0:" + first)
        pool.spawn_on(1, echo_once, conn).result()  # the rest on hub 1
        return client_future.result()

    def tls_client(port):
        with gsocket.create_connection(("127.0.0.1", port)) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"one")
                a = tls.recv(64)
                tls.sendall(b"two")
                b = tls.recv(64)
                return a, b

    assert pool.spawn_on(0, serve_then_move).result(20) == (b"hub0:one", b"1:two")


def test_seed_accept_loop_spreads_connections_round_robin_over_every_hub():
    """The issue's example verbatim (after patch_all), with each connection reporting its hub."""
    result = run_python("""
        from gevent import monkey; monkey.patch_all()
        import socket, threading, collections, greenpool

        N = 64
        port_box = greenpool.Future()

        def handle(conn):
            with conn:
                data = conn.recv(1024)
                kids = [greenpool.spawn(greenpool.current_hub) for _ in range(2)]
                pinned = all(k.result() is greenpool.current_hub() for k in kids)
                conn.sendall(b"%d %d %s" % (greenpool.current_hub().index, pinned, data))

        def server():
            listener = socket.create_server(("127.0.0.1", 0))   # as in the issue
            port_box.set_result(listener.getsockname()[1])
            for _ in range(N):
                conn, _ = listener.accept()
                greenpool.spawn(handle, conn)        # lands on the next hub, round-robin

        replies = []
        def client(i):
            with socket.create_connection(("127.0.0.1", port_box.result())) as c:
                c.sendall(b"msg%d" % i)
                replies.append(c.recv(1024).split())

        def clients():
            for i in range(N):
                client(i)
        # clients on another pool's hub, one at a time, so the order is the accept order
        p = greenpool.Pool(1)
        f = p.spawn(clients)
        greenpool.run(server, size=4)
        f.result(30)
        p.shutdown()
        hubs = collections.Counter(int(r[0]) for r in replies)
        assert len(replies) == N, len(replies)
        assert all(r[1] == b"1" for r in replies), "children left their hub"
        assert sorted(hubs) == [0, 1, 2, 3] and set(hubs.values()) == {N // 4}, hubs
        print("ok", dict(hubs))
    """, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_gevent_stream_server_with_a_pool_as_spawner_spreads_connections(make_pool):
    p = make_pool(3)
    ready = threading.Event()
    box = {}
    stop = greenpool.Future()

    def handle(conn, addr):
        echo_once(conn)

    def server_thread():
        server = StreamServer(("127.0.0.1", 0), handle, spawn=p)
        server.start()
        box["address"] = server.address
        ready.set()
        stop.result(30)  # waits cooperatively: this thread's hub keeps accepting
        server.stop(timeout=5)

    t = threading.Thread(target=server_thread)
    t.start()
    assert ready.wait(10)
    hubs = []
    for _i in range(9):
        with stdlib_socket.create_connection(box["address"], timeout=10) as c:
            c.sendall(b"x")
            hubs.append(int(c.recv(64).split(b":")[0]))
    stop.set_result(None)
    t.join(10)
    assert not t.is_alive()
    assert sorted(set(hubs)) == [0, 1, 2]


def test_gevent_stream_server_pauses_accepting_while_the_pool_is_full(make_pool):
    p = make_pool(1, max_pending=1)
    release = threading.Event()
    started = threading.Event()
    blocker = p.spawn(greenpool.blocking, lambda: (started.set(), release.wait(10)))
    assert started.wait(5)
    served = []

    def handle(conn, addr):
        served.append(addr)
        echo_once(conn)

    box, ready, stop = {}, threading.Event(), greenpool.Future()

    def server_thread():
        server = StreamServer(("127.0.0.1", 0), handle, spawn=p)
        server.start()
        box["address"] = server.address
        ready.set()
        stop.result(30)
        server.stop(timeout=5)

    t = threading.Thread(target=server_thread)
    t.start()
    assert ready.wait(10)
    clients = [stdlib_socket.create_connection(box["address"], timeout=10) for _ in range(3)]
    for c in clients:
        c.sendall(b"y")
    release.set()  # the hub frees up; the notifier resumes accepting
    replies = [c.recv(64) for c in clients]
    for c in clients:
        c.close()
    blocker.result(5)
    stop.set_result(None)
    t.join(10)
    assert replies == [b"0:y"] * 3
    assert len(served) == 3


def test_using_a_socket_from_the_wrong_hub_raises_wrong_hub_error_naming_the_fix(pool):
    server, client = pool.spawn_on(0, socketpair_on_hub).result(10)

    def read_on_hub_1():
        return server.recv(1)  # in a closure: not rebound; nothing to read, so it waits

    with pytest.raises(WrongHubError, match="rebind"):
        pool.spawn_on(1, read_on_hub_1).result(10)
    pool.spawn_on(0, lambda: (server.close(), client.close())).result(10)

"""greenpool.serve: real sockets on loopback, every spread mode."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

import gevent.ssl
import pytest

import greenpool
from greenpool.server import SPREADS, idle
from tests.helpers import make_certificate, wait_until

pytestmark = pytest.mark.timeout(30)


def echo(sock, addr):
    """Echo until the peer closes."""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        sock.sendall(data)


def recv_exactly(sock, size: int) -> bytes:
    chunks = []
    while size:
        data = sock.recv(size)
        if not data:
            break
        chunks.append(data)
        size -= len(data)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return make_certificate(tmp_path_factory.mktemp("tls"))


def client_context(cert: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cert)
    ctx.check_hostname = True
    return ctx


@pytest.fixture
def servers():
    """Servers to stop after the test, whatever happened."""
    started = []
    yield started
    for server in started:
        server.stop(timeout=1)


# -- spreading connections -------------------------------------------------


@pytest.mark.parametrize("spread", SPREADS)
def test_echo_is_correct_over_200_concurrent_connections(pool, servers, spread):
    server = greenpool.serve(echo, pool=pool, spread=spread)
    servers.append(server)
    clients = [socket.create_connection(server.address) for _ in range(200)]
    try:
        for i, client in enumerate(clients):
            client.sendall(b"message %03d;" % i)
        for i, client in enumerate(clients):
            assert recv_exactly(client, 12) == b"message %03d;" % i
    finally:
        for client in clients:
            client.close()
    assert server.accepted == 200
    assert sum(server.connections_per_hub) == 200


@pytest.mark.parametrize("spread", ["reuseport", "shared"])
def test_connections_land_on_several_hubs(pool, servers, spread):
    server = greenpool.serve(echo, pool=pool, spread=spread)
    servers.append(server)
    # Several client threads, so connections arrive while other hubs are busy.
    def connect_many():
        for _ in range(50):
            with socket.create_connection(server.address) as client:
                client.sendall(b"x")
                assert client.recv(1) == b"x"

    threads = [threading.Thread(target=connect_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: sum(server.connections_per_hub) == 200)
    assert sum(1 for n in server.connections_per_hub if n) > 1, server.connections_per_hub


def test_dispatch_spreads_connections_round_robin_over_every_hub(pool, servers):
    server = greenpool.serve(echo, pool=pool, spread="dispatch")
    servers.append(server)
    for _ in range(40):
        with socket.create_connection(server.address) as client:
            client.sendall(b"x")
            assert client.recv(1) == b"x"
    wait_until(lambda: sum(server.connections_per_hub) == 40)
    assert server.connections_per_hub == [10, 10, 10, 10]


def test_handler_runs_on_the_hub_that_owns_its_socket(pool, servers):
    seen = []

    def where(sock, addr):
        seen.append(sock.hub is greenpool.current_hub().gevent_hub)
        sock.sendall(b"%d" % greenpool.current_hub().index)

    server = greenpool.serve(where, pool=pool, spread="dispatch")
    servers.append(server)
    replies = set()
    for _ in range(8):
        with socket.create_connection(server.address) as client:
            replies.add(client.recv(8))
    assert replies == {b"0", b"1", b"2", b"3"}
    assert seen == [True] * 8


@pytest.mark.parametrize("spread", SPREADS)
def test_accepted_connections_have_nagle_disabled(pool, servers, spread):
    """Responses written in two pieces must not wait for the peer's delayed ACK."""

    def nodelay(sock, addr):
        sock.sendall(b"%d" % sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    server = greenpool.serve(nodelay, pool=pool, spread=spread)
    servers.append(server)
    for _ in range(4):
        with socket.create_connection(server.address) as client:
            assert client.recv(8) != b"0"


def test_reuseport_binds_one_listener_per_hub_on_the_chosen_port(pool, servers):
    server = greenpool.serve(echo, pool=pool, spread="reuseport")
    servers.append(server)
    host, port = server.address
    assert host == "127.0.0.1" and port > 0
    assert len(server._listeners) == pool.size
    assert {s.getsockname()[1] for s in server._listeners} == {port}


# -- TLS ---------------------------------------------------------------------


@pytest.mark.parametrize("spread", SPREADS)
def test_tls_round_trip_with_a_self_signed_certificate(pool, servers, certificate, spread):
    cert, key = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = greenpool.serve(echo, pool=pool, ssl_context=server_ctx, spread=spread)
    servers.append(server)
    ctx = client_context(cert)
    for i in range(8):
        with socket.create_connection(server.address) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as client:
                client.sendall(b"secret %d" % i)
                assert client.recv(100) == b"secret %d" % i
                assert client.version().startswith("TLS")
    wait_until(lambda: sum(server.connections_per_hub) == 8)
    if spread != "shared":  # shared: whichever hub wakes first, maybe always the same
        assert sum(1 for n in server.connections_per_hub if n) > 1


def test_tls_accepts_a_gevent_ssl_context(pool, servers, certificate):
    cert, key = certificate
    server_ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = greenpool.serve(echo, pool=pool, ssl_context=server_ctx)
    servers.append(server)
    with socket.create_connection(server.address) as raw:
        with client_context(cert).wrap_socket(raw, server_hostname="localhost") as client:
            client.sendall(b"hello")
            assert client.recv(100) == b"hello"


def test_failed_tls_handshake_closes_only_that_connection(pool, servers, certificate):
    cert, key = certificate
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server = greenpool.serve(echo, pool=pool, ssl_context=server_ctx)
    servers.append(server)
    with socket.create_connection(server.address) as plain:
        plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
        plain.settimeout(10)
        try:
            while plain.recv(1024):
                pass
        except ConnectionResetError:
            pass
    with socket.create_connection(server.address) as raw:
        with client_context(cert).wrap_socket(raw, server_hostname="localhost") as client:
            client.sendall(b"still serving")
            assert client.recv(100) == b"still serving"


# -- stopping ----------------------------------------------------------------


def test_stop_lets_a_live_connection_finish_within_the_timeout(pool):
    release = greenpool.Future()
    started = greenpool.Future()

    def slow(sock, addr):
        request = sock.recv(100)
        if request != b"job":  # a probe from refused() below
            return
        started.set_result(None)
        release.result()
        sock.sendall(b"done " + request)

    server = greenpool.serve(slow, pool=pool)
    client = socket.create_connection(server.address)
    client.sendall(b"job")
    started.result(timeout=10)
    stopper = threading.Thread(target=server.stop, kwargs={"timeout": 20})
    stopper.start()
    # The listener closes first: new connections are refused...
    def refused():
        try:
            socket.create_connection(server.address, timeout=1).close()
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:  # queued on a listener as it closed
            pass
        except TimeoutError:  # a SYN that met the listener as it closed is
            pass  # dropped, not refused; the next try is refused (seen in CI)
        return False

    wait_until(refused)
    assert stopper.is_alive() and not server.stopped  # ...while the live one is waited for.
    release.set_result(None)
    assert recv_exactly(client, 8) == b"done job"
    stopper.join(10)
    assert not stopper.is_alive() and server.stopped
    assert client.recv(10) == b""
    client.close()


def test_stop_closes_a_connection_still_busy_after_the_timeout(pool):
    ended = greenpool.Future()

    def stuck(sock, addr):
        try:
            sock.recv(100)  # the client never sends
        finally:
            ended.set_result(None)

    server = greenpool.serve(stuck, pool=pool)
    client = socket.create_connection(server.address)
    wait_until(lambda: server.connections == 1 and sum(server.connections_per_hub) == 1)
    t0 = time.monotonic()
    server.stop(timeout=0.2)
    assert time.monotonic() - t0 < 5
    assert ended.done()
    client.settimeout(10)
    assert client.recv(10) == b""
    assert server.connections == 0
    client.close()


def test_stop_closes_idle_connections_at_once(pool):
    def between_requests(sock, addr):
        while True:
            with idle():
                data = sock.recv(100)
            if not data:
                return
            sock.sendall(data)

    server = greenpool.serve(between_requests, pool=pool)
    client = socket.create_connection(server.address)
    client.sendall(b"ping")
    assert client.recv(4) == b"ping"
    t0 = time.monotonic()
    server.stop(timeout=30)
    assert time.monotonic() - t0 < 10
    client.settimeout(10)
    assert client.recv(10) == b""
    client.close()


def test_stop_from_a_plain_thread_a_pool_greenlet_and_a_handler(pool):
    from_thread = greenpool.serve(echo, pool=pool)
    t = threading.Thread(target=from_thread.stop)
    t.start()
    t.join(10)
    assert from_thread.stopped

    from_greenlet = greenpool.serve(echo, pool=pool)
    pool.spawn(from_greenlet.stop).result(timeout=10)
    assert from_greenlet.stopped

    holder = {}

    def stop_me(sock, addr):
        holder["server"].stop(timeout=5)
        sock.sendall(b"stopped")

    from_handler = greenpool.serve(stop_me, pool=pool)
    holder["server"] = from_handler
    with socket.create_connection(from_handler.address) as client:
        assert recv_exactly(client, 7) == b"stopped"
    wait_until(lambda: from_handler.stopped)


def test_serve_and_stop_from_inside_greenpool_run():
    from gevent import socket as gsocket

    def main():
        server = greenpool.serve(echo, pool=greenpool.current_pool(), spread="shared")
        with gsocket.create_connection(server.address) as client:  # cooperative client
            client.sendall(b"inside")
            reply = client.recv(6)
        server.stop(timeout=5)
        return reply, server.stopped

    assert greenpool.run(main, size=2) == (b"inside", True)


def test_serve_forever_returns_when_stopped_and_private_pool_shuts_down():
    server = greenpool.serve(echo, hubs=2)
    hubs = server.pool.hubs
    threading.Timer(0.05, server.stop).start()
    server.serve_forever()
    assert server.stopped
    assert not any(hub.is_alive() for hub in hubs)


def test_context_manager_stops_the_server(pool):
    with greenpool.serve(echo, pool=pool) as server:
        with socket.create_connection(server.address) as client:
            client.sendall(b"x")
            assert client.recv(1) == b"x"
    assert server.stopped
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=5)


def test_stop_twice_is_harmless(pool):
    server = greenpool.serve(echo, pool=pool)
    server.stop()
    server.stop()
    assert server.stopped


# -- limits ------------------------------------------------------------------


def test_max_connections_stops_accepting_until_a_connection_closes(make_pool, servers):
    def echo_once_then_wait(sock, addr):
        sock.sendall(sock.recv(100))
        sock.recv(100)  # until the client closes

    pool = make_pool(2)
    server = greenpool.serve(echo_once_then_wait, pool=pool, max_connections=2)
    servers.append(server)
    first = socket.create_connection(server.address)
    second = socket.create_connection(server.address)
    for client in (first, second):
        client.sendall(b"in")
        assert client.recv(2) == b"in"
    third = socket.create_connection(server.address)  # completes in the kernel backlog
    third.sendall(b"wait")
    third.settimeout(0.3)
    with pytest.raises(socket.timeout):
        third.recv(4)
    assert server.accepted == 2 and server.connections == 2
    first.close()
    third.settimeout(10)
    assert third.recv(4) == b"wait"
    assert server.accepted == 3
    second.close()
    third.close()


def test_idle_timeout_closes_a_silent_connection(pool, servers):
    server = greenpool.serve(echo, pool=pool, idle_timeout=0.3)
    servers.append(server)
    with socket.create_connection(server.address) as client:
        client.sendall(b"k")  # active within the timeout: served
        assert client.recv(1) == b"k"
        client.settimeout(10)
        t0 = time.monotonic()
        assert client.recv(10) == b""  # then silent: closed by the server
        assert time.monotonic() - t0 < 8
    wait_until(lambda: server.connections == 0)


# -- errors ------------------------------------------------------------------


def test_handler_exception_closes_only_its_connection_and_is_logged(pool, servers, caplog):
    def fragile(sock, addr):
        while True:
            data = sock.recv(100)
            if not data:
                return
            if data == b"boom":
                raise RuntimeError("handler exploded")
            sock.sendall(data)

    server = greenpool.serve(fragile, pool=pool)
    servers.append(server)
    with caplog.at_level(logging.ERROR, logger="greenpool"):
        with socket.create_connection(server.address) as good, \
                socket.create_connection(server.address) as bad:
            good.sendall(b"a")
            assert good.recv(1) == b"a"
            bad.sendall(b"boom")
            bad.settimeout(10)
            assert bad.recv(10) == b""
            good.sendall(b"b")
            assert good.recv(1) == b"b"
    failures = [r for r in caplog.records if r.name == "greenpool" and r.exc_info]
    assert len(failures) == 1
    assert "fragile" in failures[0].getMessage()
    assert isinstance(failures[0].exc_info[1], RuntimeError)


def test_non_callable_handler_is_a_type_error():
    with pytest.raises(TypeError, match="handler must be callable"):
        greenpool.serve("not a handler")


def test_bad_spread_lists_the_choices():
    with pytest.raises(ValueError, match="'reuseport', 'shared', 'dispatch'"):
        greenpool.serve(echo, spread="random")


@pytest.mark.parametrize("option", [{"backlog": 0}, {"max_connections": -1},
                                    {"idle_timeout": 0}, {"max_connections": True}])
def test_bad_limits_are_value_errors(option):
    with pytest.raises(ValueError):
        greenpool.serve(echo, **option)


def test_unresolvable_address_names_the_address(pool):
    with pytest.raises(socket.gaierror, match="no-such-host.invalid"):
        greenpool.serve(echo, ("no-such-host.invalid", 0), pool=pool)


@pytest.mark.parametrize("address", [("127.0.0.1", 70000), "127.0.0.1", ("127.0.0.1",), 8080])
def test_malformed_address_is_a_value_error(pool, address):
    with pytest.raises(ValueError):
        greenpool.serve(echo, address, pool=pool)


@pytest.mark.parametrize("spread", SPREADS)
def test_busy_address_is_an_os_error_naming_it(pool, spread):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            greenpool.serve(echo, ("127.0.0.1", port), pool=pool, spread=spread)
    assert len(pool) == 0  # no accept loop was left behind


def test_string_address_is_accepted(pool):
    with greenpool.serve(echo, "127.0.0.1:0", pool=pool) as server:
        with socket.create_connection(server.address) as client:
            client.sendall(b"s")
            assert client.recv(1) == b"s"


@pytest.mark.timeout(30)
def test_a_tls_client_that_never_says_hello_does_not_hold_a_graceful_stop(pool, certificate):
    cert, key = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = greenpool.serve(echo, pool=pool, ssl_context=ctx)
    silent = socket.create_connection(server.address)  # TCP only: no ClientHello, ever
    try:
        wait_until(lambda: server.connections == 1)
        stopper = threading.Thread(target=server.stop)  # no timeout: would wait forever
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive()
        assert server.connections == 0
        silent.settimeout(5)  # and its descriptor was closed, not left to the GC
        try:
            assert silent.recv(1) == b""
        except ConnectionResetError:
            pass
    finally:
        silent.close()


@pytest.mark.timeout(30)
def test_stop_gives_up_on_a_handler_that_ignores_greenletexit(monkeypatch, caplog):
    """stop(timeout) stays bounded: the private pool is not waited for such a handler."""
    import greenpool.server as server_module

    monkeypatch.setattr(server_module, "_KILL_GRACE", 0.2)
    release = threading.Event()
    entered = threading.Event()

    def stubborn(sock, addr):
        entered.set()
        while not release.is_set():
            try:
                gevent.sleep(0.02)
            except gevent.GreenletExit:
                pass  # a handler that refuses to die

    server = greenpool.serve(stubborn, hubs=2)
    client = socket.create_connection(server.address)
    try:
        assert entered.wait(10)
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="greenpool"):
            server.stop(timeout=0.2)
        assert time.monotonic() - began < 5.0
        assert "1 connections ignored being closed" in caplog.text
    finally:
        release.set()
        client.close()
    assert all(hub.wait_stopped(10) for hub in server.pool.hubs)  # ends once it returns


def test_a_client_ssl_context_is_refused_at_the_call(pool, certificate):
    cert, key = certificate
    ctx = ssl.create_default_context()  # Purpose.SERVER_AUTH: for clients
    ctx.load_cert_chain(cert, key)
    with pytest.raises(ValueError, match="client context .*PROTOCOL_TLS_SERVER"):
        greenpool.serve(echo, pool=pool, ssl_context=ctx)


def test_an_ssl_context_without_a_certificate_is_refused_at_the_call(pool):
    with pytest.raises(ValueError, match="no certificate: call ssl_context.load_cert_chain"):
        greenpool.serve(echo, pool=pool, ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))


def test_a_tls12_only_context_with_uncommon_ciphers_is_accepted(pool, servers, certificate):
    """The probe's client must not refuse what real clients may still speak."""
    cert, key = certificate
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES256-SHA")  # SHA-1 MAC: outside default client lists
    servers.append(greenpool.serve(echo, pool=pool, ssl_context=ctx))


def test_an_ssl_context_requiring_client_certificates_is_accepted(pool, servers, certificate):
    cert, key = certificate
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = greenpool.serve(echo, pool=pool, ssl_context=ctx)
    servers.append(server)
    client_ctx = client_context(cert)
    client_ctx.load_cert_chain(cert, key)
    with socket.create_connection(server.address) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="localhost") as client:
            client.sendall(b"mutual")
            assert client.recv(100) == b"mutual"


@pytest.mark.timeout(30)
def test_stop_closes_connections_still_queued_on_a_busy_hub(make_pool):
    """Tasks cancelled before they ran must not keep their clients connected."""
    p = make_pool(2)
    release = threading.Event()
    busy = p.spawn_on(1, release.wait, 20)  # hub 1 blocked natively: its tasks stay queued
    server = greenpool.serve(lambda sock, addr: sock.recv(1), pool=p, spread="dispatch")
    clients = [socket.create_connection(server.address) for _ in range(4)]
    try:
        wait_until(lambda: server.accepted == 4 and p.hubs[1].queued == 2)
        server.stop(timeout=0.2)
        for c in clients:
            c.settimeout(5)
            try:
                assert c.recv(1) == b""  # closed by the server, not left hanging
            except ConnectionResetError:
                pass
    finally:
        release.set()
        busy.result(10)
        for c in clients:
            c.close()

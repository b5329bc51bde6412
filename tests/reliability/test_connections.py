"""Connections: many held open at once, stop() under load, handlers and clients that misbehave.

Servers run on a 4-hub pool in the test process. Clients are either a
separate process (10,000 connections need more descriptors than one process
may hold for both ends) or gevent greenlets on a one-hub client pool, never on
the server's hubs. Every wait is bounded: socket timeouts, futures with
timeouts, or polling with a deadline.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import struct
import sys
import time

import gevent
import gevent.socket
import pytest

import greenpool
from greenpool.server import idle
from tests.helpers import shut_down
from tests.procs import ServerProcess
from tests.reliability._support import (
    REPO_ROOT,
    leaked_fds,
    open_fds,
    raise_fd_limit,
    restore_fd_limit,
    sized,
    wait_until,
)

HUBS = 4


def upper_lines(sock, addr) -> None:
    """Answer every line with the line upper-cased, until the client closes."""
    reader = sock.makefile("rb")
    try:
        for line in reader:
            sock.sendall(line.upper())
    finally:
        reader.close()


@pytest.fixture
def pool():
    p = greenpool.Pool(HUBS, name="conn")
    try:
        yield p
    finally:
        shut_down(p)


@pytest.fixture
def clients():
    """A one-hub pool for gevent client greenlets, apart from the server's hubs."""
    p = greenpool.Pool(1, name="clients")
    try:
        yield p
    finally:
        shut_down(p)


def run_clients(clients: greenpool.Pool, client, count: int, timeout: float) -> list:
    """Run ``client(i)`` for i < count as greenlets on the client hub; their results."""

    def all_of_them():
        greenlets = [gevent.spawn(client, i) for i in range(count)]
        gevent.joinall(greenlets, timeout=timeout, raise_error=True)
        return [g.value for g in greenlets]

    return clients.spawn(all_of_them).result(timeout + 5)


# -- many connections held open --------------------------------------------------


@sized(500, 10_000, fast_timeout=60, full_timeout=300)
def test_concurrent_connections_held_open_are_all_answered_and_no_fd_leaks(record, size):
    previous_limit = raise_fd_limit(size + 1024)
    try:
        fds_at_start = open_fds()
        pool = greenpool.Pool(HUBS, name="held")
        try:
            fds_with_pool = open_fds()
            server = greenpool.serve(upper_lines, pool=pool, backlog=4096)
            host, port = server.address
            began = time.perf_counter()
            with ServerProcess(
                [sys.executable, "-m", "tests.reliability._hold_clients", host, str(port),
                 str(size)],
                cwd=REPO_ROOT,
            ) as proc:
                proc.wait_for("^(connected|skip|first error)", timeout=240)
                if "skip:" in proc.output:
                    pytest.skip(proc.output.strip())
                held = server.connections
                per_hub = server.connections_per_hub
                proc.proc.send_signal(signal.SIGUSR1)
                proc.wait_for("^result ", timeout=120)
                assert proc.wait_exit(30) == 0, proc.output
                output = proc.output
            seconds = time.perf_counter() - began
            wait_until(lambda: server.connections == 0, 30, "every server connection to end")
            server.stop(5)
            fds_after_stop = open_fds()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        fds_at_end = open_fds()
    finally:
        restore_fd_limit(previous_limit)
    result = json.loads(output.split("result ", 1)[1].splitlines()[0])
    lost = size - result["answered"]
    server_leaks = leaked_fds(fds_with_pool, fds_after_stop)
    pool_leaks = leaked_fds(fds_at_start, fds_at_end)
    record(
        "connections held open at once (serve)",
        f"{size:,} connections, {held:,} open together, hubs {per_hub}",
        lost,
        f"{seconds:.1f} s; fds leaked: {len(server_leaks)} server, {len(pool_leaks)} pool",
    )
    assert result["error_count"] == 0, result["errors"]
    assert held == size, "not every connection was open at the same time"
    assert all(n > 0 for n in per_hub), per_hub
    assert lost == 0
    assert server_leaks == [], "descriptors leaked by the server"
    assert pool_leaks == [], "descriptors leaked by the pool"


# -- stop(timeout) under load ------------------------------------------------------

STOP_TIMEOUT = 0.5
#: stop() may overrun its timeout by the time killed handlers need to close.
STOP_SLACK = 1.5


def busy_or_idle(sock, addr) -> None:
    """Say ready, then wait on the client: inside idle() for "idle", as a busy request else."""
    reader = sock.makefile("rb")
    try:
        kind = reader.readline()
        sock.sendall(b"ready\n")
        if kind == b"idle\n":
            with idle():
                sock.recv(1)
        else:
            sock.recv(1)
    finally:
        reader.close()


@sized(200, 2000, fast_timeout=30, full_timeout=120)
def test_stop_closes_every_connection_within_its_timeout(record, pool, clients, size):
    previous_limit = raise_fd_limit(2 * size + 1024)
    server = greenpool.serve(busy_or_idle, pool=pool, backlog=4096)
    ready: list[int] = []

    def client(i: int):
        sock = gevent.socket.create_connection(server.address, timeout=30)
        try:
            sock.sendall(b"idle\n" if i % 2 else b"busy\n")
            assert sock.recv(6) == b"ready\n"
            ready.append(i)
            sock.settimeout(STOP_TIMEOUT + STOP_SLACK + 10)
            try:
                data = sock.recv(1)
            except ConnectionResetError:
                data = b""
            return i, data, time.monotonic()
        finally:
            sock.close()

    try:
        results = clients.spawn(run_clients, clients, client, size, 60)
        wait_until(lambda: len(ready) == size or results.done(), 60, "every client ready")
        held = server.connections
        began = time.monotonic()
        server.stop(STOP_TIMEOUT)
        stop_seconds = time.monotonic() - began
        closes = results.result(STOP_TIMEOUT + STOP_SLACK + 20)
    finally:
        server.stop(0)
        restore_fd_limit(previous_limit)
    not_closed = [i for i, data, _ in closes if data != b""]
    idle_late = [i for i, _, at in closes if i % 2 and at - began >= STOP_TIMEOUT]
    busy_late = [i for i, _, at in closes if not i % 2 and at - began > STOP_TIMEOUT + STOP_SLACK]
    idle_max = max(at - began for i, _, at in closes if i % 2)
    record(
        f"Server.stop({STOP_TIMEOUT}) with connections open",
        f"{held:,} connections ({size // 2:,} idle, {size - size // 2:,} busy)",
        len(not_closed) + len(idle_late) + len(busy_late) + server.connections,
        f"stop took {stop_seconds:.2f} s; idle closed within {idle_max * 1e3:.0f} ms",
    )
    assert held == size
    assert not not_closed, "connections still open after stop()"
    assert not idle_late, "idle connections should close at once, not after the timeout"
    assert not busy_late
    assert STOP_TIMEOUT * 0.9 <= stop_seconds <= STOP_TIMEOUT + STOP_SLACK
    assert server.connections == 0


# -- a handler that kills its own connection mid-write -----------------------------

PAYLOAD = b"x" * (4 * 2**20)
SMALL_BUFFER = 4096


def read_line(sock) -> bytes:
    """Read up to a newline without makefile(): a makefile reader would keep the
    descriptor open after ``sock.close()`` (the socket module's reference counting)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    return data


def writer(sock, addr) -> None:
    """Start a large write, then kill the connection under it in the way the client asks."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    mode = read_line(sock).strip()
    if mode == b"close":  # another greenlet closes the socket the handler writes to
        gevent.spawn(sock.close)
        sock.sendall(PAYLOAD)
    elif mode == b"shutdown":
        gevent.spawn(sock.shutdown, socket.SHUT_RDWR)
        sock.sendall(PAYLOAD)
    elif mode == b"raise":
        sock.sendall(PAYLOAD[: 64 * 1024])
        raise RuntimeError("handler bug after a partial write")
    else:
        sock.sendall(b"whole answer\n")


MODES = (b"close", b"shutdown", b"raise", b"normal")


@sized(100, 2000, fast_timeout=30, full_timeout=180)
def test_a_handler_killing_its_own_connection_mid_write_hurts_no_other(
    record, pool, clients, caplog, size
):
    fds_before = open_fds()
    server = greenpool.serve(writer, pool=pool, backlog=4096)

    def client(i: int):
        mode = MODES[i % len(MODES)]
        sock = gevent.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        sock.settimeout(30)
        sock.connect(server.address)
        try:
            sock.sendall(mode + b"\n")
            got = 0
            try:
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    got += len(data)
            except ConnectionResetError:
                pass
            return mode, got
        finally:
            sock.close()

    with caplog.at_level(logging.CRITICAL, logger="greenpool"):
        try:
            results = run_clients(clients, client, size, 120)
            wait_until(lambda: server.connections == 0, 10, "every connection to end")
            after = [f.result(5) for f in pool.broadcast(lambda: greenpool.current_hub().index)]
        finally:
            server.stop(5)
    fds_after = open_fds()
    normal = [got for mode, got in results if mode == b"normal"]
    killed = [got for mode, got in results if mode != b"normal"]
    lost = sum(got != len(b"whole answer\n") for got in normal)
    lost += sum(got >= len(PAYLOAD) for got in killed)
    record(
        "handler kills its own connection mid-write",
        f"{len(killed):,} killed (close/shutdown/raise) + {len(normal):,} normal connections",
        lost,
        f"fds leaked: {len(leaked_fds(fds_before, fds_after))}; all {HUBS} hubs served after",
    )
    assert lost == 0, sorted(set(results))[:10]
    assert after == list(range(HUBS))
    assert leaked_fds(fds_before, fds_after) == []


# -- clients that misbehave ---------------------------------------------------------


def reset(sock) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@sized(200, 5000, fast_timeout=30, full_timeout=180)
def test_clients_that_reset_leave_no_connection_behind(record, pool, clients, caplog, size):
    server = greenpool.serve(upper_lines, pool=pool, backlog=4096)

    def client(i: int) -> None:
        sock = gevent.socket.create_connection(server.address, timeout=30)
        if i % 3 == 0:
            sock.sendall(b"partial line, never ended")
        elif i % 3 == 1:  # reset while the server is still answering
            sock.sendall(b"line\n" * 2000)
        reset(sock)

    with caplog.at_level(logging.DEBUG, logger="greenpool"):
        try:
            began = time.perf_counter()
            run_clients(clients, client, size, 120)
            wait_until(lambda: server.connections == 0, 10, "every reset connection to end")
            seconds = time.perf_counter() - began
            answered = run_clients(clients, lambda i: round_trip(server.address, i), 10, 10)
            accepted = server.accepted
        finally:
            server.stop(5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    record(
        "clients that reset (SO_LINGER 0)",
        f"{size:,} connections ({accepted - 10:,} accepted)",
        server.connections + len(errors) + answered.count(False),
        f"all ended in {seconds:.2f} s; {len(errors)} errors logged",
    )
    assert not errors, errors[0].getMessage()
    assert all(answered)


def round_trip(address, i: int) -> bool:
    """One normal client: a line and its answer."""
    sock = gevent.socket.create_connection(address, timeout=10)
    try:
        sock.sendall(b"hello %d\n" % i)
        reader = sock.makefile("rb")
        try:
            return reader.readline() == b"HELLO %d\n" % i
        finally:
            reader.close()
    finally:
        sock.close()


@sized(200, 5000, fast_timeout=30, full_timeout=180)
def test_half_closed_clients_get_every_answer(record, pool, clients, size):
    server = greenpool.serve(upper_lines, pool=pool, backlog=4096)

    def client(i: int) -> bool:
        sock = gevent.socket.create_connection(server.address, timeout=30)
        try:
            sock.sendall(b"half %d\nclosed %d\n" % (i, i))
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks) == b"HALF %d\nCLOSED %d\n" % (i, i)
        finally:
            sock.close()

    try:
        began = time.perf_counter()
        answers = run_clients(clients, client, size, 120)
        seconds = time.perf_counter() - began
        wait_until(lambda: server.connections == 0, 10, "every half-closed connection to end")
    finally:
        server.stop(5)
    record(
        "clients that half-close (SHUT_WR)",
        f"{size:,} connections, 2 lines each",
        answers.count(False),
        f"{seconds:.2f} s",
    )
    assert all(answers)


IDLE_TIMEOUT = 0.3
#: A slowloris client sends its next byte this long after the last one.
TRICKLE = 1.0


@sized((20, 1.5), (200, 5.0), fast_timeout=30, full_timeout=120)
def test_slowloris_clients_are_timed_out_and_normal_clients_still_get_in(
    record, pool, clients, size
):
    slots, attack_seconds = size
    lifetimes: list[float] = []  # how long each connection's handler ran

    def timed_upper_lines(sock, addr) -> None:
        began = time.monotonic()
        try:
            upper_lines(sock, addr)
        finally:
            lifetimes.append(time.monotonic() - began)

    server = greenpool.serve(
        timed_upper_lines, pool=pool, backlog=4096, max_connections=slots,
        idle_timeout=IDLE_TIMEOUT,
    )
    attack_ends = time.monotonic() + attack_seconds

    def attacker(i: int) -> int:
        """Trickle one byte a second on a connection until the server closes it; repeat."""
        connections = 0
        while time.monotonic() < attack_ends:
            sock = gevent.socket.create_connection(server.address, timeout=30)
            connections += 1
            sock.settimeout(TRICKLE)
            try:
                while time.monotonic() < attack_ends + 10:
                    sock.sendall(b"s")
                    try:
                        if sock.recv(1) == b"":
                            break
                    except TimeoutError:
                        continue  # still open a second later: trickle on
                    except ConnectionResetError:
                        break
            finally:
                sock.close()
        return connections

    def normal(i: int) -> float:
        began = time.monotonic()
        assert round_trip(server.address, i)
        return time.monotonic() - began

    try:
        attack = clients.spawn(run_clients, clients, attacker, 2 * slots, attack_seconds + 30)
        wait_until(lambda: server.connections >= slots, 10, "the attackers to fill every slot")
        latencies = run_clients(clients, normal, 10, attack_seconds + 10)
        attack_connections = sum(attack.result(attack_seconds + 40))
    finally:
        server.stop(5)
    # A timed-out trickler lives IDLE_TIMEOUT after its last byte (plus one more
    # byte at most, if it was accepted just before sending it); one that lives
    # longer got bytes a second apart without being closed.
    outlived = [t for t in lifetimes if t >= IDLE_TIMEOUT + TRICKLE]
    record(
        f"slowloris (1 byte/s) vs max_connections={slots}, idle_timeout {IDLE_TIMEOUT} s",
        f"{2 * slots} attackers for {attack_seconds} s ({attack_connections:,} connections)",
        len(outlived),
        f"longest connection {max(lifetimes):.2f} s; normal clients got in within "
        f"{max(latencies):.2f} s",
    )
    assert not outlived, "a trickling connection outlived the idle timeout"
    assert max(latencies) < 3.0, "normal clients could not get in during the attack"

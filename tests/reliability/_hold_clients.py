"""A separate process that holds many connections open at once (plain gevent, no greenpool).

``python -m tests.reliability._hold_clients HOST PORT COUNT`` opens COUNT
connections (at most ``CONNECTS_IN_FLIGHT`` connecting at a time), sends
``first <i>`` on each and checks the answer; once every connection has been
answered and is still open it prints ``connected``. On SIGUSR1 it sends
``second <i>`` on every connection, checks the answers, closes them all and
prints ``result <json>``. A separate process, because both ends of 10,000
connections need more descriptors than one process may have.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import time

import gevent
import gevent.event
import gevent.lock
import gevent.socket

CONNECTS_IN_FLIGHT = 256
TIMEOUT = 60.0


def main(host: str, port: int, count: int) -> int:
    needed = count + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            print(f"skip: RLIMIT_NOFILE hard limit {hard} < {needed}", flush=True)
            return 77
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    go = gevent.event.Event()
    gevent.signal_handler(signal.SIGUSR1, go.set)
    gate = gevent.lock.Semaphore(CONNECTS_IN_FLIGHT)
    state = {"connected": 0, "answered": 0, "errors": []}

    def client(i: int) -> None:
        try:
            with gate:
                sock = gevent.socket.create_connection((host, port), timeout=TIMEOUT)
            reader = sock.makefile("rb")
            try:
                sock.sendall(b"first %d\n" % i)
                if reader.readline() != b"FIRST %d\n" % i:
                    raise AssertionError(f"wrong first answer on connection {i}")
                state["connected"] += 1
                if state["connected"] == count:
                    print("connected", flush=True)
                go.wait()
                sock.sendall(b"second %d\n" % i)
                if reader.readline() != b"SECOND %d\n" % i:
                    raise AssertionError(f"wrong second answer on connection {i}")
                state["answered"] += 1
            finally:
                reader.close()
                sock.close()
        except Exception as exc:  # noqa: BLE001 - reported in the result
            state["errors"].append(f"{i}: {exc!r}")
            if len(state["errors"]) == 1:
                print(f"first error: {exc!r}", flush=True)

    began = time.monotonic()
    clients = [gevent.spawn(client, i) for i in range(count)]
    gevent.joinall(clients, timeout=4 * TIMEOUT)
    state["seconds"] = round(time.monotonic() - began, 2)
    state["error_count"] = len(state["errors"])
    state["errors"] = state["errors"][:5]
    print("result " + json.dumps(state), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))

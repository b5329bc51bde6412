"""WebSocket server stress: many clients on 4 hubs, a broadcaster thread, nothing lost.

The app is ``examples/websocket_broadcast.py`` (flask-sock, a broadcaster
``threading.Thread`` fed by a ``queue.Queue``) served unchanged by ``python -m
greenpool wsgi --patch --hubs 4``. The clients (``loadtests/ws_clients.py``
``stress``, raw sockets in their own process) run echo round trips while one
more client asks for broadcasts one after another; the broadcaster thread
writes each to every client, whose readers wait on whichever hub accepted
them. Every echo must come back, every client must get every broadcast
exactly once and in order, and the server must exit 0 on SIGTERM afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.procs import ServerProcess, python_cmd, wait_until_answers
from tests.reliability._support import sized

ROOT = Path(__file__).resolve().parent.parent.parent
LISTENING = r"serving \S+ on (https?)://127\.0\.0\.1:(\d+) with (\d+) hubs?"


@sized((1000, 20), (5000, 50), fast_timeout=120, full_timeout=300)
def test_websocket_clients_on_4_hubs_get_every_echo_and_every_broadcast_once(record, size):
    clients, broadcasts = size
    cmd = python_cmd("-m", "greenpool", "wsgi", "examples.websocket_broadcast:app", "--patch",
                     "--hubs", "4", "--bind", "127.0.0.1:0", "--graceful-timeout", "5")
    with ServerProcess(cmd, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}) as server:
        port = int(server.wait_for(LISTENING, timeout=30).group(2))
        wait_until_answers(port, "/")
        load = subprocess.run(
            [sys.executable, "-m", "loadtests.ws_clients", "127.0.0.1", str(port), "stress",
             str(clients), str(broadcasts)],
            cwd=ROOT, capture_output=True, text=True, timeout=size[0] / 10 + 60,
        )
        assert load.returncode == 0, load.stderr
        result = json.loads(load.stdout.strip().splitlines()[-1])
        lost = (result["lost"] + result["duplicated"] + result["out_of_order"]
                + result["mismatched"] + result["errors"])
        record(
            "WebSocket clients on 4 hubs, broadcaster thread (flask-sock, --patch)",
            f"{clients:,} clients, {broadcasts} broadcasts to all, echoes meanwhile",
            lost,
            f"{result['echoes']:,} echoes, {clients * broadcasts:,} broadcast deliveries in "
            f"{result['seconds']:.1f} s; lost {result['lost']}, duplicated "
            f"{result['duplicated']}, out of order {result['out_of_order']}, errors "
            f"{result['errors']}",
        )
        assert lost == 0, result
        assert result["echoes"] >= clients, result
        assert server.stop() == 0, server.output
    assert "Traceback" not in server.output, server.output

"""WebSockets: greenpool's server vs ``gunicorn -k gevent`` and uvicorn, one process each.

    python benchmarks/websockets.py [--sections memory,echo] [--rounds 3]
        [--idle 10000] [--clients 1000] [--seconds 5] [--servers greenpool-1,gevent,uvicorn]

The app is ``examples/websocket_broadcast.py``: flask-sock (simple-websocket)
under ``python -m greenpool wsgi --patch`` and ``gunicorn -k gevent``, its
ASGI twin (``benchmarks/ws_apps.py``) under uvicorn (``websockets``
underneath; skipped with a message when uvicorn is not installed: ``pip
install -e '.[bench]'``). The load comes from
``loadtests/ws_clients.py``, raw-socket clients on one gevent hub in their
own process.

Sections (``--sections``, default both):

``memory``  open ``--idle`` connections (default 10,000), wait until the server
            counts them all, then report the server's resident memory per
            connection ((RSS with them open - RSS before) / N, the server's
            whole process tree) and the time to broadcast one message to all
            of them (the median of 3; flask-sock's broadcaster is a
            ``threading.Thread``). Goal: greenpool's KiB per connection <=
            gevent's.
``echo``    ``--clients`` connections (default 1,000) doing closed-loop echo
            round trips of 32-byte text messages for ``--seconds``, each
            server once per round, in alternating rounds; medians, and each
            ratio is the median of the per-round ratios. Goal: greenpool on 1
            hub >= 1.0x gevent. The client and the server share the machine's
            cores, so the server's CPU time per round trip (its process tree's
            user + system time over the round trips of the round) is reported
            too: the cost of a message whoever the bottleneck is.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.websocket_broadcast:app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(name: str, port: int) -> list[str] | None:
    """The command that serves the benchmark app as ``name``, or None if not installed."""
    py = sys.executable
    if name.startswith("greenpool-"):
        hubs = name.split("-", 1)[1]
        return [py, "-m", "greenpool", "wsgi", APP, "--patch", "--hubs", hubs,
                "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    if name == "gevent":
        return [py, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--worker-connections", "20000",
                "-b", f"127.0.0.1:{port}", "--log-level", "warning", APP]
    if name == "uvicorn":
        if importlib.util.find_spec("uvicorn") is None:
            return None
        return [py, "-m", "uvicorn", "benchmarks.ws_apps:asgi_app", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning", "--no-access-log"]
    raise SystemExit(f"unknown server {name!r}: greenpool-N, gevent or uvicorn")


class Server:
    """One server process (tree) serving the app on a free port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        cmd = server_command(name, self.port)
        if cmd is None:
            raise LookupError(f"{name}: not installed (pip install -e '.[bench]')")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start")
                time.sleep(0.1)

    def pids(self) -> list[int]:
        """The server's process tree (gunicorn: master and worker)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's process tree so far."""
        ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        """Resident memory of the server's whole process tree (gunicorn: master + worker)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def client(server: Server, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "loadtests.ws_clients", "127.0.0.1", str(server.port), *args],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)


def answer(proc: subprocess.Popen, command: str | None = None) -> dict:
    if command is not None:
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the load client exited with {proc.wait()}")
    return json.loads(line)


def finish(proc: subprocess.Popen) -> None:
    """Tell a ``hold`` client to close its connections and exit."""
    proc.stdin.write("close\n")
    proc.stdin.close()
    proc.wait(60)


def memory(name: str, idle: int) -> dict:
    server = Server(name)
    try:
        warm = client(server, "hold", "1")
        answer(warm)
        answer(warm, "count")
        finish(warm)
        time.sleep(0.5)
        before = server.rss_kib()
        load = client(server, "hold", str(idle))
        t0 = time.perf_counter()
        opened = answer(load)["open"]
        open_s = time.perf_counter() - t0
        deadline = time.monotonic() + 30
        while (count := answer(load, "count")["count"]) < idle and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        after = server.rss_kib()
        broadcasts = [answer(load, "broadcast") for _ in range(3)]
        finish(load)
        complete = all(b["complete"] for b in broadcasts)
        return {
            "server": name, "open": opened, "counted": count, "open_s": open_s,
            "rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
            "kib_per_conn": (after - before) / max(opened, 1),
            "broadcast_s": statistics.median(b["broadcast_s"] for b in broadcasts),
            "broadcast_complete": complete,
        }
    finally:
        server.stop()


def echo_round(server: Server, clients: int, seconds: float) -> dict:
    """One closed-loop echo round; adds the server's CPU microseconds per round trip."""
    load = client(server, "echo", str(clients), str(seconds))
    cpu = server.cpu_seconds()
    result = answer(load)
    result["cpu_us"] = (server.cpu_seconds() - cpu) / max(result["roundtrips"], 1) * 1e6
    load.wait(30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="memory,echo")
    parser.add_argument("--servers", default="greenpool-1,greenpool-4,gevent,uvicorn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    opts = parser.parse_args()
    names = []
    for name in opts.servers.split(","):
        if server_command(name, 0) is None:
            print(f"# {name}: not installed, skipped (pip install -e '.[bench]')", flush=True)
        else:
            names.append(name)
    sections = opts.sections.split(",")
    if "memory" in sections:
        print(f"## memory: {opts.idle} idle WebSocket connections", flush=True)
        print("| server | KiB/conn | RSS before MiB | RSS with them MiB | open s | "
              "broadcast to all s |", flush=True)
        print("|---|---:|---:|---:|---:|---:|", flush=True)
        for name in names:
            row = memory(name, opts.idle)
            flag = "" if row["broadcast_complete"] and row["counted"] >= opts.idle else " (!)"
            print(f"| {name}{flag} | {row['kib_per_conn']:.1f} | {row['rss_before_mib']:.1f} | "
                  f"{row['rss_after_mib']:.1f} | {row['open_s']:.2f} | "
                  f"{row['broadcast_s']:.3f} |", flush=True)
    if "echo" in sections:
        print(f"## echo: {opts.clients} clients, {opts.seconds:g} s a round, "
              f"{opts.rounds} rounds", flush=True)
        servers = {name: Server(name) for name in names}
        try:
            for server in servers.values():  # warm-up
                echo_round(server, min(opts.clients, 100), 1.0)
            rates: dict[str, list[float]] = {name: [] for name in names}
            cpus: dict[str, list[float]] = {name: [] for name in names}
            errors: dict[str, int] = {name: 0 for name in names}
            for rnd in range(opts.rounds):
                order = names if rnd % 2 == 0 else names[::-1]
                for name in order:
                    result = echo_round(servers[name], opts.clients, opts.seconds)
                    rates[name].append(result["rate"])
                    cpus[name].append(result["cpu_us"])
                    errors[name] += result["errors"]
                    print(f"#   round {rnd + 1} {name}: {result['rate']:.0f} round trips/s, "
                          f"{result['cpu_us']:.1f} us server CPU each, {result['errors']} errors",
                          flush=True)
        finally:
            for server in servers.values():
                server.stop()
        base = "gevent" if "gevent" in rates else names[0]
        print(f"| server | round trips/s (median) | / {base} | server CPU per round trip "
              f"(median) | / {base} | errors |", flush=True)
        print("|---|---:|---:|---:|---:|---:|", flush=True)
        for name in names:
            ratio = statistics.median(a / b for a, b in zip(rates[name], rates[base], strict=True))
            cpu_ratio = statistics.median(a / b for a, b in zip(cpus[name], cpus[base],
                                                                 strict=True))
            print(f"| {name} | {statistics.median(rates[name]):.0f} | {ratio:.2f}x | "
                  f"{statistics.median(cpus[name]):.1f} us | {cpu_ratio:.2f}x | "
                  f"{errors[name]} |", flush=True)


if __name__ == "__main__":
    main()

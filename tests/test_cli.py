"""The command line: ``python -m greenpool wsgi module:app`` as users run it."""

from __future__ import annotations

import http.client
import logging
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from greenpool.__main__ import byte_size, main, parse_bind
from tests.helpers import make_certificate
from tests.procs import ServerProcess, check_graceful_sigterm, get, python_cmd

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
LISTENING = r"serving \S+ on (https?)://127\.0\.0\.1:(\d+) with (\d+) hubs?"

APP = textwrap.dedent(
    '''
    import time

    import greenpool


    def stream():
        yield b"first\\n"
        time.sleep(0.5)  # unpatched: holds this hub, the other hub keeps serving
        yield b"second\\n"


    def app(environ, start_response):
        if environ["PATH_INFO"] == "/patched":
            from greenpool import monkey

            body = str(monkey.is_patched()).encode()
            start_response("200 OK", [("Content-Length", str(len(body)))])
            return [body]
        if environ["PATH_INFO"] == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return stream()
        body = f"hub {greenpool.current_hub().index}".encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


    def make_app():
        return app


    not_callable = 42
    '''
)


@pytest.fixture
def app_dir(tmp_path, monkeypatch):
    """A directory holding cli_app.py, made the current directory.

    main() run in-process puts the directory on sys.path, imports the app and
    configures logging; all of that is undone after the test.
    """
    (tmp_path / "cli_app.py").write_text(APP)
    (tmp_path / "cli_broken_app.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    yield tmp_path
    for name in ("cli_app", "cli_broken_app"):
        sys.modules.pop(name, None)


def start_cli(*args: str, cwd) -> tuple[ServerProcess, tuple[str, int]]:
    server = ServerProcess(python_cmd("-m", "greenpool", "wsgi", *args), cwd=cwd)
    try:
        port = int(server.wait_for(LISTENING).group(2))
    except BaseException:
        server.__exit__(None, None, None)
        raise
    return server, ("127.0.0.1", port)


# -- arguments (in-process: fast) -------------------------------------------------


def test_help_lists_the_wsgi_command_and_its_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "wsgi" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["wsgi", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--hubs", "--bind", "--certfile", "--keyfile", "--access-log", "--spread"):
        assert option in out


def test_spread_choices_match_the_server():
    from greenpool import __main__, server

    assert (__main__.SPREADS, __main__.DEFAULT_SPREAD) == (server.SPREADS, server.DEFAULT_SPREAD)


def test_python_dash_m_greenpool_help_runs():
    result = subprocess.run(
        python_cmd("-m", "greenpool", "wsgi", "--help"), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "MODULE:APP" in result.stdout


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cli_app", "must be 'module:attribute'"),
        ("cli_app:", "must be 'module:attribute'"),
        (":app", "must be 'module:attribute'"),
        ("cli_app:not-a-name", "not a Python attribute name"),
        ("no_such_module_xyz:app", "no module named 'no_such_module_xyz'"),
        ("cli_app:missing", "'cli_app' has no attribute 'missing'"),
        ("cli_app:app.missing", "'cli_app.app' has no attribute 'missing'"),
        ("cli_app:not_callable", "is a int, not a WSGI callable"),
    ],
)
def test_bad_module_app_is_a_one_line_error(app_dir, capsys, spec, message):
    assert main(["wsgi", spec, "--bind", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("greenpool wsgi: error: ")
    assert message in err


def test_import_error_inside_the_app_module_shows_its_traceback(app_dir, capsys):
    assert main(["wsgi", "cli_broken_app:app", "--bind", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.strip().splitlines()[-1] == (
        "greenpool wsgi: error: loading 'cli_broken_app:app' failed: "
        "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"
    )


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("127.0.0.1", "is not HOST:PORT"),
        ("127.0.0.1:http", "is not a number"),
        ("127.0.0.1:70000", "not in 0..65535"),
        ("::1:8000", "IPv6 host in brackets"),
    ],
)
def test_bad_bind_is_an_argument_error(app_dir, capsys, bind, message):
    with pytest.raises(SystemExit) as exc:
        main(["wsgi", "cli_app:app", "--bind", bind])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "address"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), (":8000", ("0.0.0.0", 8000)), ("[::1]:0", ("::1", 0))],
)
def test_parse_bind_accepts_gunicorn_style_addresses(text, address):
    assert parse_bind(text) == address


@pytest.mark.parametrize(
    ("text", "size"), [("0", 0), ("1048576", 2**20), ("512k", 512 * 2**10), ("1M", 2**20),
                       ("2g", 2 * 2**30)],
)
def test_max_body_size_takes_bytes_or_k_m_g(text, size):
    assert byte_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1.5M", "-1", "1T", "ten"])
def test_bad_max_body_size_is_an_argument_error(app_dir, capsys, text):
    with pytest.raises(SystemExit) as exc:
        main(["wsgi", "cli_app:app", "--max-body-size", text])
    assert exc.value.code == 2
    assert "is not a size: use bytes, or a number with K, M or G" in capsys.readouterr().err


def test_busy_address_is_a_one_line_error(app_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["wsgi", "cli_app:app", "--bind", f"127.0.0.1:{port}", "--hubs", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("greenpool wsgi: error: ")
    assert f"127.0.0.1:{port}" in err


def test_a_port_another_reuseport_server_listens_on_is_busy_unless_reuse_port(app_dir, capsys):
    """SO_REUSEPORT must not let a second (stale) server take a share of the port."""
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["wsgi", "cli_app:app", "--bind", f"127.0.0.1:{port}", "--hubs", "1"]) == 1
        err = capsys.readouterr().err
        assert f"127.0.0.1:{port} is already in use" in err and "--reuse-port" in err
        # with --reuse-port it shares the port, as the user asked
        server, address = start_cli(
            "cli_app:app", "--hubs", "1", "--bind", f"127.0.0.1:{port}", "--reuse-port",
            cwd=app_dir,
        )
        with server:
            assert address == ("127.0.0.1", port)
            assert server.stop(signal.SIGTERM) == 0


def test_keyfile_without_certfile_is_refused(app_dir, capsys):
    assert main(["wsgi", "cli_app:app", "--keyfile", "key.pem"]) == 2
    assert "--keyfile needs --certfile" in capsys.readouterr().err


def test_unreadable_certificate_is_a_one_line_error(app_dir, capsys):
    assert main(["wsgi", "cli_app:app", "--certfile", "missing.pem"]) == 1
    assert "cannot load certificate 'missing.pem'" in capsys.readouterr().err


# -- serving (real subprocesses) ----------------------------------------------------


@pytest.mark.timeout(45)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_the_example_app_and_exits_0_on_signal(sig):
    server, address = start_cli(
        "wsgi_hello:app", "--hubs", "2", "--bind", "127.0.0.1:0", "--access-log",
        "--max-body-size", "1k", cwd=EXAMPLES
    )
    with server:
        for _ in range(5):
            status, body = get(address)
            assert status == 200
            assert body.startswith(b"Hello, world from hub ")
            assert body.endswith(b" of 2!\n")
        conn = http.client.HTTPConnection(*address, timeout=10)
        try:
            conn.request("POST", "/", body=b"x" * 1025)
            assert conn.getresponse().status == 413
        finally:
            conn.close()
        server.wait_for(r'"GET / HTTP/1.1" 200')  # the access log
        assert server.stop(sig) == 0
    assert "Traceback" not in server.output
    assert "stopped" in server.output


@pytest.mark.timeout(45)
def test_sigterm_lets_in_flight_request_finish_and_closes_idle_keepalive(app_dir):
    server, address = start_cli(
        "cli_app:app", "--hubs", "2", "--bind", "127.0.0.1:0", "--graceful-timeout", "30",
        cwd=app_dir,
    )
    with server:
        assert check_graceful_sigterm(server, address).startswith(b"hub ")
    assert "Traceback" not in server.output


@pytest.mark.timeout(45)
@pytest.mark.parametrize(("options", "patched"), [((), b"False"), (("--patch",), b"True")])
def test_patch_option_monkey_patches_with_greenpool_before_the_app(app_dir, options, patched):
    server, address = start_cli(
        "cli_app:app", "--hubs", "2", "--bind", "127.0.0.1:0", *options, cwd=app_dir,
    )
    with server:
        assert get(address, "/patched") == (200, patched)
        assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.output
    assert "MonkeyPatchWarning" not in server.output  # patched before ssl was imported


@pytest.mark.timeout(45)
def test_certfile_and_keyfile_serve_https(app_dir):
    cert, key = make_certificate(app_dir)
    server, address = start_cli(
        "cli_app:make_app", "--factory", "--hubs", "2", "--bind", "127.0.0.1:0",
        "--certfile", str(cert), "--keyfile", str(key), cwd=app_dir,
    )
    with server:
        assert server.wait_for(LISTENING).group(1) == "https"
        context = ssl.create_default_context(cafile=str(cert))
        results = []

        def client():
            conn = http.client.HTTPSConnection(*address, context=context, timeout=10)
            conn.request("GET", "/")
            response = conn.getresponse()
            results.append((response.status, response.read()))
            conn.close()

        clients = [threading.Thread(target=client) for _ in range(4)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(15)
        assert len(results) == 4
        assert all(status == 200 and body.startswith(b"hub ") for status, body in results)
        assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.output


def test_bad_cpu_affinity_is_a_one_line_usage_error():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "greenpool", "wsgi", "examples.wsgi_hello:app",
         "--cpu-affinity", "x"],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 2 and "--cpu-affinity" in out.stderr and "Traceback" not in out.stderr

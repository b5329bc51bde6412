"""greenpool's HTTP/1.1 server core for WSGI: llhttp parsing, strict framing, gevent sockets.

* :mod:`greenpool.http.parser`: requests parsed from bytes, no I/O (llhttp
  plus the RFC 9112 checks llhttp leaves out), and the :class:`Limits`;
* :mod:`greenpool.http.body`: ``wsgi.input``, read from the socket on demand;
* :mod:`greenpool.http.response`: checks of the app's status and headers,
  ``Date``, ``wsgi.file_wrapper``;
* :mod:`greenpool.http.connection`: one connection's request loop and the
  WSGI call, with the :class:`Service` hooks servers plug into;
* :mod:`greenpool.http.upgrade`: the connection of an upgrade request (a
  WebSocket handshake), handed to the app with the bytes read past its head;
* :mod:`greenpool.http.app_threads`: how many requests a thread-style app
  runs at once, each on a long-lived greenlet that keeps its thread-locals.

:func:`greenpool.wsgi.serve`, ``python -m greenpool wsgi`` and
:class:`greenpool.gunicorn.Worker` all serve through it.
"""

from greenpool.http.body import BodyTooLarge
from greenpool.http.connection import Service, serve_connection
from greenpool.http.parser import HTTPError, Limits
from greenpool.http.response import FileWrapper

__all__ = ["BodyTooLarge", "FileWrapper", "HTTPError", "Limits", "Service", "serve_connection"]

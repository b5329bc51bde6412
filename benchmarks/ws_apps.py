"""The ASGI twin of ``examples/websocket_broadcast.py``: uvicorn's app in the benchmarks.

The same protocol (echo, ``broadcast:``, ``count`` at ``/ws``) for uvicorn
(``websockets`` underneath), what most users pick for WebSockets; its
broadcast runs on the event loop.
"""

from __future__ import annotations

BROADCAST = "broadcast:"

_asgi_clients: set = set()


async def asgi_app(scope, receive, send) -> None:
    """The ASGI twin of ``wsgi_app`` (echo, ``broadcast:``, ``count``)."""
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok\n"})
        return
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    _asgi_clients.add(send)
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            if text is not None and text.startswith(BROADCAST):
                payload = text[len(BROADCAST):]
                for client in list(_asgi_clients):
                    try:
                        await client({"type": "websocket.send", "text": payload})
                    except Exception:
                        pass
                continue
            if text == "count":
                await send({"type": "websocket.send", "text": str(len(_asgi_clients))})
                continue
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": event.get("bytes")})
    finally:
        _asgi_clients.discard(send)

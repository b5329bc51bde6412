"""Placeholder replaced by the servers work (issue 3)."""


def is_gevent_server(obj) -> bool:
    from gevent.baseserver import BaseServer

    return isinstance(obj, BaseServer)


def run_gevent_server(server, **options):
    raise NotImplementedError("serving gevent server objects on the pool")

"""optuna-dashboard on a tuner storage: the library call behind ``tuner dashboard``.

We serve the optuna-dashboard WSGI app ourselves (a threaded wsgiref server, as its own CLI does)
so that the port is bound, and its errors reported, before the URL is printed, and so that
``port=0`` picks a free port. The storage is opened read-mostly: reads go through SQLite's WAL, so
the dashboard keeps working while ``tuner run`` writes trials to the same file.
"""

from __future__ import annotations

import errno
import socket
import threading
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tuner.errors import ConfigError, StudyNotFoundError
from tuner.storage import describe_storage, open_storage

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Dashboard", "prepare_dashboard"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Dashboard:
    """A bound, not yet serving, dashboard; ``serve_forever()`` blocks until ``close()`` or Ctrl-C."""

    url: str
    host: str
    port: int
    storage: str
    studies: tuple[str, ...]
    server: WSGIServer = field(repr=False, compare=False)
    _serving: threading.Event = field(default_factory=threading.Event, init=False, repr=False, compare=False)

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.server.server_close()

    def close(self) -> None:
        """Stop serving (from another thread than ``serve_forever``) and release the port."""
        if self._serving.is_set():
            self.server.shutdown()  # waits for serve_forever to return; it would wait forever if never started
        self.server.server_close()


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def prepare_dashboard(*, storage_url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_requests: bool = False) -> Dashboard:
    """Check that the storage holds a study, bind ``host:port`` (0 = any free port) and return the server.

    Raises ``StudyNotFoundError`` for a missing SQLite file or a storage without studies (nothing
    is created), ``ConfigError`` when the address cannot be bound.
    """
    from optuna_dashboard import wsgi

    # No heartbeats: the dashboard runs no trials, and must not fail other workers' trials itself.
    storage = open_storage(storage_url, must_exist=True, heartbeat_interval=None, grace_period=None)
    names = tuple(study.study_name for study in storage.get_all_studies())
    if not names:
        raise StudyNotFoundError(f"{describe_storage(storage_url)} holds no study (run 'tuner run' first or pass --storage)")
    server_class = _ThreadedServer
    if ":" in host:
        server_class = type("_ThreadedServer6", (_ThreadedServer,), {"address_family": socket.AF_INET6})
    try:
        server = make_server(host, port, wsgi(storage), server_class=server_class, handler_class=WSGIRequestHandler if log_requests else _QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use; choose another with --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # names the IDNA codec cannot encode; ports past 65535
        raise ConfigError(f"cannot listen on {host!r} port {port}: {exc}") from None
    bound_port = server.server_address[1]
    shown_host = f"[{host}]" if ":" in host else host
    return Dashboard(
        url=f"http://{shown_host}:{bound_port}/dashboard",
        host=host,
        port=bound_port,
        storage=describe_storage(storage_url),
        studies=names,
        server=server,
    )

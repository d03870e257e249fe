"""optuna-dashboard on a tuner storage: the library call behind ``tuner dashboard``.

We serve the optuna-dashboard WSGI app ourselves (a threaded wsgiref server, as its own CLI does)
so that the port is bound, and its errors reported, before the URL is printed, and so that
``port=0`` picks a free port. The storage is opened read-mostly: reads go through SQLite's WAL, so
the dashboard keeps working while ``tuner run`` writes trials to the same file.

While it serves, a background thread keeps tuner's validation-accuracy curves (``tuner.curves``)
stored in each study, where optuna-dashboard shows user-defined plotly figures on the study's page:
Optuna's own plots only know the intermediate values, which hold the validation loss.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tuner.errors import ConfigError, StudyNotFoundError
from tuner.storage import database_message, open_storage
from tuner.storageurl import describe_storage

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "CURVES_PER_EPOCH_ID", "CURVES_OVER_TIME_ID", "CurvePublisher", "Dashboard", "prepare_dashboard"]

_log = logging.getLogger(__name__)

# optuna-dashboard's ids for the stored figures (HTML ids); storing under the same id replaces a figure.
CURVES_PER_EPOCH_ID = "tuner-validation-accuracy-per-epoch"
CURVES_OVER_TIME_ID = "tuner-best-validation-accuracy-over-time"

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
    publisher: CurvePublisher | None = field(default=None, repr=False, compare=False)
    _serving: threading.Event = field(default_factory=threading.Event, init=False, repr=False, compare=False)

    def serve_forever(self) -> None:
        self._serving.set()
        if self.publisher is not None:
            self.publisher.start()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            if self.publisher is not None:
                self.publisher.stop()
            self.server.server_close()

    def close(self) -> None:
        """Stop serving (from another thread than ``serve_forever``) and release the port."""
        if self._serving.is_set():
            self.server.shutdown()  # waits for serve_forever to return; it would wait forever if never started
        self.server.server_close()


class CurvePublisher:
    """Stores each study's validation-accuracy figures in the study, again whenever an epoch was added."""

    def __init__(self, storage: optuna.storages.BaseStorage, *, every_seconds: float = 10.0) -> None:
        self.storage = storage
        self.every_seconds = every_seconds
        self._published: dict[str, int] = {}  # study name -> epochs drawn last time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tuner-curves", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def publish_once(self) -> int:
        """Draw and store the figures of every study whose epochs changed; returns how many studies were updated."""
        import optuna
        from optuna_dashboard import save_plotly_graph_object

        from tuner.curves import ACCURACY_OVER_TIME, ACCURACY_PER_EPOCH, accuracy_over_time_figure, accuracy_per_epoch_figure
        from tuner.records import epoch_log

        figures = (
            (CURVES_PER_EPOCH_ID, ACCURACY_PER_EPOCH, accuracy_per_epoch_figure),
            (CURVES_OVER_TIME_ID, ACCURACY_OVER_TIME, accuracy_over_time_figure),
        )

        updated = 0
        for summary in self.storage.get_all_studies():
            study = optuna.load_study(study_name=summary.study_name, storage=self.storage)
            trials = study.get_trials(deepcopy=False)
            epochs = sum(len(epoch_log(trial)) for trial in trials)
            if not epochs or self._published.get(study.study_name) == epochs:
                continue
            for graph_id, title, draw in figures:
                figure = draw(trials)
                if figure is not None:
                    figure.update_layout(title=title, margin={"t": 50})
                    save_plotly_graph_object(study, figure, graph_object_id=graph_id)
            self._published[study.study_name] = epochs
            updated += 1
        return updated

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.publish_once()
            except Exception as exc:  # a busy or lost database must not stop the dashboard; try again later
                _log.warning("could not store the accuracy curves: %s", database_message(exc))
            self._stop.wait(self.every_seconds)


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadedServer6(_ThreadedServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


def prepare_dashboard(
    *, storage_url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_requests: bool = False, publish_curves: bool = True
) -> Dashboard:
    """Check that the storage holds a study, bind ``host:port`` (0 = any free port) and return the server.

    Raises ``StudyNotFoundError`` for a missing SQLite file or a storage without studies (nothing
    is created), ``ConfigError`` when the address cannot be bound.

    Args:
        storage_url: SQLAlchemy URL of the study database.
        host, port: where to listen; port 0 picks a free one.
        log_requests: log every HTTP request.
        publish_curves: keep tuner's validation-accuracy figures stored in each study.

    Example::

        dashboard = prepare_dashboard(storage_url="sqlite:///tuner.db", port=0)
        print(dashboard.url)
        dashboard.serve_forever()
    """
    from optuna_dashboard import wsgi

    # No heartbeats: the dashboard runs no trials, and must not fail other workers' trials itself.
    storage = open_storage(storage_url, must_exist=True, heartbeat_interval=None, grace_period=None)
    names = tuple(study.study_name for study in storage.get_all_studies())
    if not names:
        raise StudyNotFoundError(
            f"{describe_storage(storage_url)} holds no study", remedy="run a study first, or give another {storage_url}"
        )
    server_class = _ThreadedServer6 if ":" in host else _ThreadedServer
    try:
        server = make_server(
            host, port, wsgi(storage), server_class=server_class, handler_class=WSGIRequestHandler if log_requests else _QuietHandler
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use", remedy="choose another {port}") from None
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
        publisher=CurvePublisher(storage) if publish_curves else None,
    )

"""Prometheus metrics of one server: the go-grpc-prometheus series plus queue depth."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .storage.db import database
from .storage.models import Task

log = logging.getLogger(__name__)

STATUSES = ("todo", "in_progress", "done", "cancelled")
_LABELS = ("grpc_type", "grpc_service", "grpc_method")
_DEPTH = f"SELECT status, COUNT(*) FROM {Task._meta.table_name} GROUP BY status"  # type: ignore[attr-defined]


class _TaskDepth(Collector):
    """`agenttasks_tasks{status}`: one GROUP BY at scrape time (an index on status serves it)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("agenttasks_tasks", "Tasks per status.", labels=["status"])
        counts = dict.fromkeys(STATUSES, 0)
        try:
            with database.connection_context():
                counts.update(dict(database.execute_sql(_DEPTH).fetchall()))
        except Exception:  # a scrape during a database outage still shows the call counts
            log.warning("agenttasks_tasks: database unavailable", exc_info=True)
            return
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family


class Metrics:
    """The series of one server, in a registry of its own (several servers per process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.started_total = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _LABELS,
            registry=self.registry,
        )
        self.handled_total = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_LABELS, "grpc_code"),
            registry=self.registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _LABELS,
            registry=self.registry,
        )
        self.registry.register(_TaskDepth())
        self._http: Any = None

    def series(self, kind: str, service: str, method: str) -> MethodSeries:
        """The series of one method (labels resolved once, not per call)."""
        return MethodSeries(self, (kind, service, method))

    def serve(self, host: str, port: int) -> None:
        """Serves `/metrics` over HTTP on host:port (OSError if the port is taken)."""
        self._http, _ = start_http_server(port, addr=host.strip("[]"), registry=self.registry)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()


class MethodSeries:
    def __init__(self, metrics: Metrics, labels: tuple[str, str, str]) -> None:
        self._labels = labels
        self._started = metrics.started_total.labels(*labels)
        self._seconds = metrics.handling_seconds.labels(*labels)
        self._handled_by_code = metrics.handled_total
        self._handled: dict[str, Any] = {}

    def started(self) -> None:
        self._started.inc()

    def handled(self, code: str, seconds: float) -> None:
        counter = self._handled.get(code)
        if counter is None:
            counter = self._handled[code] = self._handled_by_code.labels(*self._labels, code)
        counter.inc()
        self._seconds.observe(seconds)

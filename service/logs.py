"""Log output: `text` lines for people, or `json`, one object per line, for collectors."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a call's fields (see api.observe) become keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "call", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, form: str = "text", stream: TextIO | None = None) -> None:
    """Logs at `level` to stderr (or `stream`)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    # Every call logs a line. Leave out of each record what no format here shows: the
    # source line (a walk up the stack per record), thread and process (the logging HOWTO's
    # "Optimization" knobs).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Peewee logs every statement with its parameters at DEBUG; those may hold secrets
    # (webhook signing keys), so its statements stay out of the log at any level.
    logging.getLogger("peewee").setLevel(logging.INFO)

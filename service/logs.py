"""Log output: `text` lines for people, or `json`, one object per line, for collectors."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CALLS = "agenttasks.calls"


def _json_entry(created: float, level: str, name: str, message: str) -> dict[str, Any]:
    return {
        "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "logger": name,
        "message": message,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a call's fields (see api.observe) become keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = _json_entry(record.created, record.levelname, record.name, record.getMessage())
        entry.update(getattr(record, "call", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class CallLines:
    """The line every call logs, written straight to the stream `configure` set up.

    Through the logging module such a line cost about a sixth of a small call's CPU time
    (a record, the handler chain, a formatter, a write and flush each). Here it is
    formatted as the configured formatter would format it, and the lines of one turn of
    the event loop are written together, with one flush, at the end of that turn: a busy
    server makes one system call for many lines, an idle one writes each at once.

    Used only while the set-up is the one `configure` made, so tests and programs that add
    handlers of their own get ordinary records; other loggers always go through logging.
    """

    def __init__(self, handler: logging.StreamHandler, form: str) -> None:
        self._handler = handler
        self._json = form == "json"
        self._pending: list[str] = []
        self._second = -1
        self._second_text = ""

    def in_charge(self, logger: logging.Logger) -> bool:
        """Whether the calls' logger still writes only through the handler made here."""
        return logging.root.handlers == [self._handler] and not logger.handlers

    def write(self, level: int, message: str, fields: dict[str, Any]) -> None:
        now = time.time()
        name = logging.getLevelName(level)
        if self._json:
            line = json.dumps(
                {**_json_entry(now, name, CALLS, message), **fields}, ensure_ascii=False
            )
        else:
            line = f"{self._asctime(now)} {name} {CALLS}: {message}"
        self._pending.append(line)
        if len(self._pending) == 1:  # the turn's first line: flush at the turn's end
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop on this thread: write it now
                self.flush()

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        handler = self._handler
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(handler.terminator.join(lines) + handler.terminator)
            handler.stream.flush()

    def _asctime(self, now: float) -> str:
        """As logging.Formatter writes %(asctime)s: local time, then milliseconds."""
        second = int(now)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second
        return f"{self._second_text},{int((now - second) * 1000):03d}"


call_lines: CallLines | None = None


def configure(level: str, form: str = "text", stream: TextIO | None = None) -> None:
    """Logs at `level` to stderr (or `stream`)."""
    global call_lines
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    call_lines = CallLines(handler, form)
    # Leave out of every record what no format here shows: the source line (a walk up the
    # stack per record), thread and process (the logging HOWTO's "Optimization" knobs).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Peewee logs every statement with its parameters at DEBUG; those may hold secrets
    # (webhook signing keys), so its statements stay out of the log at any level.
    logging.getLogger("peewee").setLevel(logging.INFO)

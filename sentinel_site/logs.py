"""Structured logging: JSON in production, readable text in development.

Request, tenant, turn and trace ids travel in context variables, so every log line emitted while
handling a request or running a turn carries them without being passed around.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
tenant_id: contextvars.ContextVar[str] = contextvars.ContextVar("tenant_id", default="-")
turn_id: contextvars.ContextVar[str] = contextvars.ContextVar("turn_id", default="-")
trace_id: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id", default="-")

_CONTEXT = {"request_id": request_id, "tenant_id": tenant_id, "turn_id": turn_id, "trace_id": trace_id}


class ContextFilter(logging.Filter):
    """Copy the context ids onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the context ids and any `extra` fields."""

    _RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

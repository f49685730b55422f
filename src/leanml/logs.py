"""Logs through the standard library: a level, and text for people or JSON lines for machines.

Every ``leanml`` command takes ``--log-level`` (``debug``, ``info``, ``warning``, ``error``; default
``warning``) and ``--log-format`` (``text`` or ``json``); :func:`configure_logging` applies the level to
leanml's loggers (``leanml.*``) and sends their records, and the warnings and errors of the libraries it
drives, to one stream: stderr (stdout carries the results). In ``json``, each record is one object on
one line::

    {"time": "2025-01-31T12:00:00.123Z", "level": "info", "logger": "leanml.serve", "message": "...", ...}

with any ``extra={...}`` fields of the call added as keys. The server runs uvicorn, whose workers are
other processes: :func:`uvicorn_log_config` gives the same settings as uvicorn's ``log_config``, with its
access log (one record per request, off by default because it costs time on every request) as an option.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any, Literal, TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
LOGGER = "leanml"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has: anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


@dataclass(frozen=True)
class LogSettings:
    """The level and format the logs are written in."""

    level: LogLevel = "warning"
    format: LogFormat = "text"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, the
    ``extra`` fields, and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_access_fields(record))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access records carry the request in their arguments: make them fields of their own."""
    if record.name != "uvicorn.access" or not isinstance(record.args, tuple) or len(record.args) != 5:
        return {}
    client, method, path, http_version, status = record.args
    return {"client": client, "method": method, "path": path, "http": http_version, "status": status}


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record, so that logs printed while a Rich
    progress bar is on screen go through it (Rich swaps ``sys.stderr`` while it draws) and do not tear it."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # the base class assigns the stream it was given; ours is always the current stderr


def make_formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of ``fmt``: JSON lines, or ``time LEVEL logger: message``."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


_active = LogSettings()


def configure_logging(level: str = "warning", fmt: str = "text") -> LogSettings:
    """Send the records at ``level`` and above, formatted as ``fmt``, to stderr (replacing the handler a
    previous call installed, so calling it twice does not print everything twice)."""
    global _active
    settings = _settings(level, fmt)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(make_formatter(settings.format))
    root.addHandler(handler)
    # leanml's records at the level asked for; the libraries' (torch, onnxscript, optuna) at warning and
    # up, else ``info`` drowns leanml's lines in theirs
    root.setLevel(max(logging.WARNING, logging.getLevelName(settings.level.upper())))
    logging.getLogger(LOGGER).setLevel(settings.level.upper())
    _active = settings
    return settings


def active_settings() -> LogSettings:
    """The settings :func:`configure_logging` applied last (the defaults before it ran)."""
    return _active


def uvicorn_log_config(settings: LogSettings | None = None, access_log: bool = False) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's ``log_config=`` (also pass ``access_log=``): uvicorn's
    and leanml's records at the level and in the format of ``settings`` (default: :func:`active_settings`),
    in every worker process. uvicorn's access log writes one record per request at ``info`` when
    ``access_log`` is on, whatever the level of the rest."""
    settings = settings or active_settings()
    level = settings.level.upper()
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if settings.format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"leanml": formatter},
        "handlers": {"stderr": {"class": f"{__name__}.StderrHandler", "formatter": "leanml"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {
                "handlers": ["stderr"],
                "level": "INFO" if access_log else "WARNING",
                "propagate": False,
            },
            "leanml": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }


def _settings(level: str, fmt: str) -> LogSettings:
    level, fmt = level.lower(), fmt.lower()
    if level not in LEVELS:
        raise ValueError(f"log level: expected one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return LogSettings(level=level, format=fmt)  # type: ignore[arg-type]

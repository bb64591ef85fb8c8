"""Logging: ``COMFYVN_LOG_LEVEL`` and a rotating ``logs/server.log`` per workspace."""

from __future__ import annotations

import logging
import logging.handlers
import os
import threading
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 5

_handler: logging.handlers.RotatingFileHandler | None = None
_lock = threading.Lock()


def setup_logging(logs_dir: Path, level: str | None = None) -> logging.Logger:
    """Send the ``comfyvn`` loggers to ``<logs_dir>/server.log`` (rotating, 5 x 5 MiB).

    The level comes from ``level``, else ``COMFYVN_LOG_LEVEL`` (e.g. ``DEBUG``), else INFO;
    it is re-read on every call.  A process logs to one workspace at a time: opening
    another workspace moves the file handler there instead of writing every line twice.
    """
    global _handler
    logger = logging.getLogger("comfyvn")
    level_name = (level or os.environ.get("COMFYVN_LOG_LEVEL") or "INFO").strip().upper()
    resolved = logging.getLevelName(level_name)
    logger.setLevel(resolved if isinstance(resolved, int) else logging.INFO)
    path = (Path(logs_dir) / "server.log").resolve()
    with _lock:
        if _handler is not None and Path(_handler.baseFilename) == path:
            return logger
        # delay=True: the file appears with the first line, not merely by opening a registry
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS,
                                                       encoding="utf-8", delay=True)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        if _handler is not None:
            logger.removeHandler(_handler)
            _handler.close()
        logger.addHandler(handler)
        _handler = handler
    return logger


def log_file() -> Path | None:
    """The file the ``comfyvn`` loggers currently write to (None before :func:`setup_logging`)."""
    return Path(_handler.baseFilename) if _handler is not None else None

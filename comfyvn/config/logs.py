"""Logging: ``COMFYVN_LOG_LEVEL`` and a rotating ``logs/server.log`` per workspace."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

_configured: set[Path] = set()


def setup_logging(logs_dir: Path, level: str | None = None) -> logging.Logger:
    """Attach a rotating ``server.log`` handler to the ``comfyvn`` logger (once per folder)."""
    logger = logging.getLogger("comfyvn")
    level_name = (level or os.environ.get("COMFYVN_LOG_LEVEL") or "INFO").upper()
    logger.setLevel(getattr(logging, level_name, logging.INFO))
    path = (logs_dir / "server.log").resolve()
    if path not in _configured:
        logs_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [pid %(process)d] %(message)s"))
        logger.addHandler(handler)
        _configured.add(path)
    return logger

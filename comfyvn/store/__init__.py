"""The workspace database: one SQLite file, WAL, named migrations and the event log."""

from .db import Database, get_database

__all__ = ["Database", "get_database"]

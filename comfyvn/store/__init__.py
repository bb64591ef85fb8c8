"""The workspace store: SQLite (embedded default) or PostgreSQL (a team's shared store), named
migrations and the event log, behind one interface (:class:`Database`)."""

from .db import (
           Connection,
           Cursor,
           Database,
           SqliteDatabase,
           database_at,
           forget_database,
           get_database,
           open_store,
)
from .errors import IntegrityError, LockTimeout, StoreUnavailable, TransactionFailed

__all__ = ["Connection", "Cursor", "Database", "IntegrityError", "LockTimeout", "SqliteDatabase", "StoreUnavailable",
           "TransactionFailed", "database_at", "forget_database", "get_database", "open_store"]

"""Engine-neutral store exceptions (SQLite and PostgreSQL raise the same ones)."""

from __future__ import annotations

from ..errors import ComfyvnError, Conflict


class IntegrityError(Conflict):
    """A constraint refused a write (a unique key, a foreign key, a check or a NOT NULL)."""


class StoreUnavailable(ComfyvnError):
    """The database server cannot be reached (HTTP 503); the next use after it returns reconnects."""

    code = "store_unavailable"


class EngineTooOld(StoreUnavailable):
    """The database library or server lacks a feature the schema needs (named in the message)."""


class TransactionFailed(ComfyvnError, RuntimeError):
    """A statement failed inside a transaction and its error was swallowed: PostgreSQL refuses the
    rest of the transaction, so nothing was committed (undo one statement with a SAVEPOINT instead)."""


class LockTimeout(Conflict, TimeoutError):
    """:meth:`Database.advisory_lock` was not granted within its timeout (another process holds it)."""

"""The one root of the core's exceptions, and its subclasses by meaning.

Every exception the core raises on purpose derives from :class:`ComfyvnError` and, where it has
one, from exactly one meaning below; ``except comfyvn.errors.NotFound`` catches a missing asset,
a missing ingest job and (through :mod:`comfyvn.client`) a 404 answered by a remote server alike.

The core knows nothing of HTTP: the server extension's error table
(``comfyvn_server_ext.handlers.base.ERROR_TABLE``) is the only place that turns a meaning into a
status code.  A concrete class keeps the built-in base its callers catch (``ValueError``,
``KeyError``, ``FileNotFoundError`` ...) after its meaning, e.g.
``class UnsafePathError(InvalidInput, ValueError)``; the meanings themselves subclass no built-in,
so re-parenting a class never makes an ``except ValueError`` catch something new.
"""

from __future__ import annotations

__all__ = [
    "ComfyvnError",
    "Conflict",
    "InvalidInput",
    "Misconfigured",
    "NotFound",
    "RateLimited",
    "Refused",
    "UpstreamFailure",
]


class ComfyvnError(Exception):
    """Root of every exception the comfyvn core raises on purpose."""


class InvalidInput(ComfyvnError):
    """The caller's value is wrong (a bad name, path, type, body or file); change it and retry."""


class NotFound(ComfyvnError):
    """The named thing (asset, job, workspace, webhook) does not exist."""


class Conflict(ComfyvnError):
    """The request is valid but the current state forbids it (a status, a collision, a changed file)."""


class Refused(ComfyvnError):
    """A policy refuses the request (a path outside the allowed roots, a secret file, a disabled feature)."""


class RateLimited(ComfyvnError):
    """Too many requests; ``retry_after`` (seconds), when set, says when to try again."""

    retry_after: float | None = None


class UpstreamFailure(ComfyvnError):
    """A service the core depends on (a provider, a remote server) failed or could not be reached."""


class Misconfigured(ComfyvnError):
    """The workspace's own configuration (config file, key file) is broken; an operator must fix it."""

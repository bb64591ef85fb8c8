"""The asset ingest queue: staging, dedup, rate limits, crash-safe apply, remote pulls.

``from comfyvn.ingest import get_ingest_queue`` is the usual entry point; see
``docs/ASSET_INGEST.md``.
"""

from .errors import (
    IngestError,
    InvalidTransitionError,
    JobNotFoundError,
    RateLimitedError,
    RemoteError,
    SourceNotAllowedError,
    TermsNotAcknowledgedError,
)
from .mappers import _REMOTE_ALLOWLIST, normalise_metadata
from .queue import (
    DEFAULT_RATE_LIMIT,
    MAX_REMOTE_BYTES,
    STATE_VERSION,
    STATUSES,
    AssetIngestQueue,
    get_ingest_queue,
)

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "MAX_REMOTE_BYTES",
    "STATE_VERSION",
    "STATUSES",
    "_REMOTE_ALLOWLIST",
    "AssetIngestQueue",
    "IngestError",
    "InvalidTransitionError",
    "JobNotFoundError",
    "RateLimitedError",
    "RemoteError",
    "SourceNotAllowedError",
    "TermsNotAcknowledgedError",
    "get_ingest_queue",
    "normalise_metadata",
]

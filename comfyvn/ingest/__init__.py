"""The asset ingest queue: staging, dedup, rate limits, crash-safe apply, remote pulls.

``from comfyvn.ingest import get_ingest_queue`` is the usual entry point; see
``docs/ASSET_INGEST.md``.
"""

from . import mappers
from .errors import (
    IngestError,
    InvalidTransitionError,
    JobNotFoundError,
    RateLimitedError,
    RemoteError,
    SourceNotAllowedError,
    TermsNotAcknowledgedError,
)
from .jobs import JobStatus
from .mappers import normalise_metadata
from .queue import (
    DEFAULT_RATE_LIMIT,
    MAX_REMOTE_BYTES,
    STATE_VERSION,
    STATUSES,
    AssetIngestQueue,
    get_ingest_queue,
)

_REMOTE_ALLOWLIST = mappers._REMOTE_ALLOWLIST  # the seed's name for the hosts remote pulls may use

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
    "JobStatus",
    "RateLimitedError",
    "RemoteError",
    "SourceNotAllowedError",
    "TermsNotAcknowledgedError",
    "get_ingest_queue",
    "normalise_metadata",
]

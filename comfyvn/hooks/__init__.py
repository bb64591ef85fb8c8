"""The modder hook bus: hook specs, the event log envelopes, history and subscriptions."""

from .bus import ModderHookBus, Subscription, get_hook_bus
from .events import apply_retention, emit, envelope_from_row, prune_events, utc_timestamp
from .specs import HOOK_SPECS, HookSpec, UnknownHookError, hook_spec, resolve_topics

__all__ = [
    "HOOK_SPECS",
    "HookSpec",
    "ModderHookBus",
    "Subscription",
    "UnknownHookError",
    "apply_retention",
    "emit",
    "envelope_from_row",
    "get_hook_bus",
    "hook_spec",
    "prune_events",
    "resolve_topics",
    "utc_timestamp",
]

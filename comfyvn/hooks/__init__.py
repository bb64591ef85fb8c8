"""The modder hook bus: hook specs, the event log envelopes, history and subscriptions."""

from .bus import ModderHookBus, Subscription, get_hook_bus
from .events import emit, envelope_from_row, utc_timestamp
from .specs import HOOK_SPECS, HookSpec, UnknownHookError, hook_spec, resolve_topics

__all__ = [
    "HOOK_SPECS",
    "HookSpec",
    "ModderHookBus",
    "Subscription",
    "UnknownHookError",
    "emit",
    "envelope_from_row",
    "get_hook_bus",
    "hook_spec",
    "resolve_topics",
    "utc_timestamp",
]

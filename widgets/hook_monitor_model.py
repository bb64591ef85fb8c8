"""The hook monitor's logic: a bounded event buffer with topic/text filters, pause and inspection."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from datetime import datetime

from comfyvn.hooks import HOOK_SPECS, ModderHookBus

CATEGORY_PREFIX = "category:"
_SUMMARY_KEYS = ("uid", "job_id", "type", "status", "provider", "rel_path", "message", "license", "tags")


def topic_options() -> list[tuple[str, str]]:
    """Filter choices: everything (``""``), each category, then each topic."""
    cats = sorted({s.category for s in HOOK_SPECS.values()})
    out: list[tuple[str, str]] = [("All topics", "")]
    out += [(f"All {c} events", CATEGORY_PREFIX + c) for c in cats]
    out += [(name, name) for name in sorted(HOOK_SPECS)]
    return out


def summarise(envelope: dict) -> str:
    """A one-line summary of an envelope's payload (the stream's third column)."""
    data = envelope.get("data") or {}
    parts = []
    for key in _SUMMARY_KEYS:
        value = data.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            more = f",… +{len(value) - 4}" if len(value) > 4 else ""
            value = ",".join(map(str, value[:4])) + more
        parts.append(f"{key}={value}")
    if "bytes_done" in data:
        total = data.get("bytes_total")
        parts.append(f"{data['bytes_done']}/{total if total is not None else '?'} bytes")
    line = "  ".join(parts)
    return line if len(line) <= 240 else line[:239] + "…"


class HookMonitorModel:
    def __init__(self, bus: ModderHookBus, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.bus = bus
        self.capacity = capacity
        self.events: deque[dict] = deque(maxlen=capacity)
        self.held: deque[dict] = deque(maxlen=capacity)
        self.paused = False
        self.topic: str | None = None
        self.text = ""
        self.selected_id: int | None = None
        self.counts: Counter[str] = Counter()
        self.received = 0
        self.last_id = 0
        self.started = time.monotonic()
        self.lock = threading.RLock()

    def load_history(self, limit: int = 100) -> int:
        """Start from the newest ``limit`` events of the log; returns the last id seen."""
        with self.lock:
            for env in self.bus.history(limit=limit):
                self._add(env)
            self.last_id = max(self.last_id, self.bus.last_id())
            return self.last_id

    def _add(self, env: dict) -> None:
        self.events.append(env)
        self.counts[env["event"]] += 1
        self.last_id = max(self.last_id, int(env["id"]))

    def receive(self, envelopes: Iterable[dict]) -> int:
        """New events from the bus; held back while paused.  Returns how many became visible."""
        shown = 0
        with self.lock:
            for env in envelopes:
                if int(env["id"]) <= self.last_id:
                    continue  # already have it (history overlap)
                self.received += 1
                if self.paused:
                    if not self.held or int(env["id"]) > int(self.held[-1]["id"]):
                        self.held.append(env)
                else:
                    self._add(env)
                    shown += 1
        return shown

    def pause(self) -> None:
        with self.lock:
            self.paused = True

    def resume(self) -> int:
        """Resume the stream and show everything that arrived meanwhile; returns that count."""
        with self.lock:
            self.paused = False
            held, self.held = list(self.held), deque(maxlen=self.capacity)
            for env in held:
                if int(env["id"]) > self.last_id:
                    self._add(env)
            return len(held)

    def clear(self) -> None:
        with self.lock:
            self.events.clear()
            self.held.clear()
            self.counts.clear()
            self.selected_id = None

    def set_filter(self, topic: str | None = None, text: str | None = None) -> None:
        """``topic``: a hook name, ``"category:<name>"`` or ``""`` for all (None keeps it); ``text``: substring."""
        with self.lock:
            if topic is not None:
                if topic and not topic.startswith(CATEGORY_PREFIX) and topic not in HOOK_SPECS:
                    raise ValueError(f"unknown topic {topic!r}; choose one of {', '.join(sorted(HOOK_SPECS))}")
                self.topic = topic or None
            if text is not None:
                self.text = text.strip().lower()

    def matches(self, env: dict) -> bool:
        topic = self.topic
        if topic:
            if topic.startswith(CATEGORY_PREFIX):
                spec = HOOK_SPECS.get(env["event"])
                if spec is None or spec.category != topic[len(CATEGORY_PREFIX):]:
                    return False
            elif env["event"] != topic:
                return False
        if self.text:
            blob = (env["event"] + " " + json.dumps(env.get("data"), ensure_ascii=False, default=str)).lower()
            if self.text not in blob:
                return False
        return True

    def visible(self, limit: int = 300) -> list[dict]:
        """Matching events, newest first."""
        with self.lock:
            out = []
            for env in reversed(self.events):
                if self.matches(env):
                    out.append(env)
                    if len(out) >= limit:
                        break
            return out

    def inspect(self, event_id: int | str) -> dict | None:
        with self.lock:
            wanted = int(event_id)
            for env in reversed(self.events):
                if int(env["id"]) == wanted:
                    self.selected_id = wanted
                    return env
        return None

    def rate(self) -> float:
        """Events per second since the monitor started (live events only)."""
        return self.received / max(1e-6, time.monotonic() - self.started)

    @staticmethod
    def row(env: dict) -> dict:
        spec = HOOK_SPECS.get(env["event"])
        tone = {"asset": "accent", "ingest": "info", "system": ""}.get(spec.category if spec else "", "")
        if env["event"] in ("on_asset_removed", "on_asset_ingest_failed"):
            tone = "bad"
        elif env["event"] == "on_asset_ingest_applied":
            tone = "ok"
        when = datetime.fromtimestamp(float(env["ts"])).strftime("%H:%M:%S.%f")[:-3]
        return {"id": str(env["id"]), "cells": {"id": env["id"], "time": when, "topic": [env["event"], tone],
                                                 "summary": summarise(env)}}

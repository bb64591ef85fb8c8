"""The Library dashboard's logic: roots with counts, the running scan's progress, duplicates, identify.

Everything comes from :mod:`comfyvn.library` (the same functions the ``comfyvn-library`` CLI and the
HTTP routes call); the running scan is followed through its ``on_library_scan_*`` hook events, so a
scan started by any process (CLI, server, another kernel) shows here.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from comfyvn.library.duplicates import duplicate_report
from comfyvn.library.identify import identify_unidentified, link_huggingface
from comfyvn.library.scan import last_scan, library_status, start_scan
from comfyvn.studio.core.asset_registry import AssetRegistry

LIBRARY_TOPICS = ["on_library_scan_started", "on_library_scan_progress", "on_library_scan_finished",
                  "on_library_identified"]


def hash_query(registry: AssetRegistry, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Gallery search: text that is a hash in any form a tool shows (AutoV2, BLAKE3, CRC32...) and
    names an asset becomes an exact hash filter; any other text stays a text search."""
    text = kwargs.get("text")
    if not text:
        return kwargs
    rec = registry.find_by_any_hash(text)
    if rec is None:
        return kwargs
    return {**kwargs, "text": None, "hash": rec["hash"]}


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class LibraryModel:
    def __init__(self, registry: AssetRegistry) -> None:
        self.registry = registry
        self.status: dict = {"roots": []}
        self.last: dict | None = None
        self.duplicates: dict = {"groups": [], "files": 0, "reclaimable_bytes": 0}
        self.progress: dict | None = None  # the running scan's newest progress event
        self.identify_result: dict | None = None
        self.identifying = False
        self.lock = threading.RLock()

    def refresh(self) -> None:
        status = library_status(self.registry)
        last = last_scan(self.registry)
        dups = duplicate_report(self.registry)
        with self.lock:
            self.status, self.last, self.duplicates = status, last, dups

    def apply_events(self, envelopes: list[dict]) -> bool:
        """Follow scans; True when the tables should be reloaded (a scan or identification finished)."""
        reload = False
        with self.lock:
            for env in envelopes:
                topic, data = env.get("event"), env.get("data") or {}
                if data.get("project_id") not in (None, self.registry.project_id):
                    continue
                if topic == "on_library_scan_started":
                    self.progress = {"phase": "walk", "files_done": 0, "files_total": 0, "bytes_done": 0,
                                     "bytes_total": 0, "started_at": time.time(), "scan_id": data.get("scan_id")}
                elif topic == "on_library_scan_progress":  # "done" may follow the summary (the AutoV3 phase)
                    self.progress = None if data.get("phase") == "done" else dict(data)
                elif topic in ("on_library_scan_finished", "on_library_identified"):
                    if topic == "on_library_scan_finished":
                        self.progress = None
                    reload = True
                elif topic and topic.startswith("on_asset_"):
                    reload = True
        return reload

    @property
    def scanning(self) -> bool:
        return self.progress is not None and self.progress.get("phase") != "done"

    def progress_text(self) -> tuple[float, str]:
        """``(fraction 0..1, "files 12/40 · 1.2 GiB of 3.0 GiB · 310 MiB/s · ETA 8 s")``."""
        p = self.progress
        if p is None:
            return 0.0, "no scan running"
        if p.get("phase") == "walk":
            return 0.0, "walking the roots…"
        total_b, done_b = p.get("bytes_total") or 0, p.get("bytes_done") or 0
        elapsed = max(1e-3, time.time() - float(p.get("phase_started_at") or p.get("started_at") or time.time()))
        rate = done_b / elapsed
        eta = (total_b - done_b) / rate if rate > 0 else None
        fraction = done_b / total_b if total_b else 1.0
        text = (f"files {p.get('files_done', 0)}/{p.get('files_total', 0)} · {human_bytes(done_b)} of "
                f"{human_bytes(total_b)} · {human_bytes(rate)}/s"
                + (f" · ETA {eta:.0f} s" if eta is not None and p.get("phase") in ("hash", "autov3") else "")
                + ("" if p.get("phase") == "hash" else f" · {p.get('phase')}"))
        return min(1.0, fraction), text

    def rows(self) -> list[dict]:
        out = []
        for r in self.status.get("roots", []):
            out.append({"id": r["name"], "cells": {
                "name": r["name"], "path": r["path"], "layout": r["layout"], "files": r["files"],
                "bytes": human_bytes(r["bytes"]), "identified": r["identified"], "unidentified": r["unidentified"],
                # chips are [text, tone] (widgets/table.py)
                "missing": [str(r["missing"]), "bad" if r["missing"] else "ok"],
                "available": ["mounted" if r["available"] else "unavailable", "ok" if r["available"] else "bad"]}})
        return out

    def scan(self, roots: list[str] | None = None, identify: bool = False) -> dict:
        return start_scan(self.registry, roots, identify=identify)

    def identify(self) -> dict:
        """Identify now (blocking: the widget runs it in a thread)."""
        with self.lock:
            self.identifying = True
        try:
            result = {**identify_unidentified(self.registry).to_dict(), "huggingface": link_huggingface(self.registry)}
        finally:
            with self.lock:
                self.identifying = False
        with self.lock:
            self.identify_result = result
        return result

    def identify_text(self) -> str:
        r = self.identify_result
        if r is None:
            return ""
        return (f"Civitai: {len(r['matched'])} identified of {r['asked']} asked in {r['calls']} calls "
                f"({r['not_found']} unknown, {r['skipped_negative']} skipped as asked recently); "
                f"Hugging Face: {len(r['huggingface'])} linked.")


__all__ = ["LIBRARY_TOPICS", "LibraryModel", "hash_query", "human_bytes"]

"""Tables and charts of the runbooks (pandas and matplotlib, imported when first used).

The display half of the runbooks: :mod:`comfyvn.ingest.repairs` and :mod:`comfyvn.runbook_reports`
find things out and repair them; these functions only show the result in a notebook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .ingest.repairs import job_epoch

if TYPE_CHECKING:  # pandas and matplotlib are imported when first used: the CLI starts fast without them
    import pandas as pd
    from matplotlib.figure import Figure

JOB_FIELDS = ("job_id", "status", "provider", "source_path", "remote_url", "staging_path", "digest", "pin",
              "attempts", "error", "asset_uid", "notes")


def jobs_frame(jobs: Sequence[dict], now: float | None = None) -> pd.DataFrame:
    """Jobs as a table a person can read (newest first, ages in minutes)."""
    import pandas as pd

    now = time.time() if now is None else now
    columns = ["job_id", "status", "provider", "source", "dest_relative", "bytes", "attempts", "updated",
               "idle_min", "asset_uid", "notes", "error"]
    rows = []
    for job in jobs:
        updated = job_epoch(job.get("updated_at"))
        rows.append({
            "job_id": job.get("job_id"), "status": job.get("status"), "provider": job.get("provider"),
            "source": job.get("source_path") or job.get("remote_url"), "dest_relative": job.get("dest_relative"),
            "bytes": job.get("bytes") or job.get("bytes_total"), "attempts": job.get("attempts"),
            "updated": pd.to_datetime(updated, unit="s", utc=True) if updated else pd.NaT,
            "idle_min": round((now - updated) / 60, 1) if updated else None,
            "asset_uid": job.get("asset_uid") or job.get("existing_uid"), "notes": ", ".join(job.get("notes") or []),
            "error": job.get("error"),
        })
    return pd.DataFrame(rows, columns=columns)


def job_table(job: dict, column: str = "value") -> pd.DataFrame:
    """One job as a two-column table (field, ``column``)."""
    import pandas as pd

    return pd.DataFrame({column: [_cell(job.get(k)) for k in JOB_FIELDS]}, index=list(JOB_FIELDS))


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def plot_status_counts(counts: dict[str, int], stuck: Sequence[dict] = (), title: str = "Jobs by status") -> Figure:
    """Bar chart of jobs per status; the stuck part of each bar in red."""
    import matplotlib.pyplot as plt

    statuses = [s for s, n in counts.items() if n] or ["(none)"]
    stuck_by = [sum(1 for j in stuck if j.get("status") == s) for s in statuses]
    fine = [counts.get(s, 0) - k for s, k in zip(statuses, stuck_by, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(statuses, fine, color="#4c78a8", label="moving / finished")
    ax.bar(statuses, stuck_by, bottom=fine, color="#e45756", label="stuck")
    ax.set_title(title)
    ax.set_ylabel("jobs")
    ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # MaxNLocator's keyword
    if any(stuck_by):
        ax.legend()
    fig.tight_layout()
    return fig


def plot_counts(counts: dict[str, int], title: str, *, bad: Sequence[str] = (), xlabel: str = "count") -> Figure:
    """Horizontal bars of ``counts`` (keys listed in ``bad`` in red)."""
    import matplotlib.pyplot as plt

    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) or [("(none)", 0)]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.45 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items],
            color=["#e45756" if k in bad else "#4c78a8" for k, _ in items])
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # MaxNLocator's keyword
    fig.tight_layout()
    return fig


def plot_cache(frame: pd.DataFrame) -> Figure:
    """Bytes held per provider, split into pinned and unpinned, missing files in red."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    if frame.empty:
        ax.text(0.5, 0.5, "the dedup cache is empty", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    mib = frame.assign(mib=frame["bytes"].fillna(0) / 2**20)
    groups = [("pinned", mib[mib["pinned"] & mib["file_present"]], "#4c78a8"),
              ("unpinned", mib[~mib["pinned"] & mib["file_present"]], "#9ecae9"),
              ("file missing", mib[~mib["file_present"]], "#e45756")]
    providers = sorted(frame["provider"].unique())
    left = [0.0] * len(providers)
    for label, part, colour in groups:
        values = [part[part["provider"] == p]["mib"].sum() for p in providers]
        ax.barh(providers, values, left=left, color=colour, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel("MiB held in staging")
    ax.set_title("Dedup cache by provider")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_checks(frame: pd.DataFrame) -> Figure:
    """Passed and failed checks per profile."""
    import matplotlib.pyplot as plt

    profiles = list(dict.fromkeys(frame["profile"])) or ["(none)"]
    passed = [int(frame[(frame["profile"] == p) & frame["ok"]].shape[0]) for p in profiles]
    failed = [int(frame[(frame["profile"] == p) & ~frame["ok"].astype(bool)].shape[0]) for p in profiles]
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.6 * len(profiles) + 1)))
    ax.barh(profiles, passed, color="#54a24b", label="passed")
    ax.barh(profiles, failed, left=passed, color="#e45756", label="failed")
    ax.invert_yaxis()
    ax.set_xlabel("checks")
    ax.set_title("System checks per profile")
    ax.legend()
    fig.tight_layout()
    return fig


__all__ = ["JOB_FIELDS", "job_table", "jobs_frame", "plot_cache", "plot_checks", "plot_counts",
           "plot_status_counts"]

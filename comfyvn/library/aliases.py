"""Hash aliases: every form a tool displays -> the file's SHA-256 (table ``hash_aliases``).

One indexed lookup turns what a person pastes (an A1111 ``[a5f58eb1c3]``, InvokeAI's
``blake3:<hex>``, Civitai's upper-case AutoV3, a CRC32) into the SHA-256s that carry it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..hashforms import HashForms, HashQuery, candidate_forms
from ..store import Connection


def alias_rows(forms: HashForms) -> list[tuple[str, str, str]]:
    return [(value.lower(), form, forms.sha256) for form, value in forms.aliases().items()]


def store_aliases(conn: Connection, many: Iterable[HashForms]) -> None:
    """Record every form of each file (inside the caller's transaction)."""
    rows = [row for forms in many for row in alias_rows(forms)]
    if rows:
        conn.executemany("INSERT INTO hash_aliases(value, form, sha256) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", rows)


def candidate_sha256s(conn: Connection, text: str) -> tuple[list[str], HashQuery]:
    """``(SHA-256s whose files show ``text`` in some form, the forms it could be)``.

    Raises :class:`ValueError` (with the reason) for text that is no hash a tool shows."""
    query = candidate_forms(text)
    marks = ",".join("?" * len(query.forms))
    found = [r[0] for r in conn.execute(
        f"SELECT DISTINCT sha256 FROM hash_aliases WHERE value = ? AND form IN ({marks}) ORDER BY sha256",
        (query.value, *query.forms))]
    if "sha256" in query.forms and query.value not in found:
        found.insert(0, query.value)  # files registered before aliases existed are known by SHA-256 alone
    return found, query


def forms_of(conn: Connection, sha256: str) -> dict[str, str]:
    """Every recorded form of one file (``{}`` when it was never hashed with all forms)."""
    return {r[0]: r[1] for r in conn.execute("SELECT form, value FROM hash_aliases WHERE sha256 = ?", (sha256,))}


__all__ = ["alias_rows", "candidate_sha256s", "forms_of", "store_aliases"]

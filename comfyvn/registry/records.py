"""Asset rows: the naming rules, the row codec (row <-> record), metadata fields, and queries with cursors.

:class:`Records` owns every read of the ``assets`` and ``asset_tags`` tables and the row insert;
a record is the decoded row, :meth:`Records.public` the form callers receive.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

from .. import rights
from ..kinds import normalise_tags
from ..library.aliases import candidate_sha256s
from ..store import Database
from .errors import AssetCollisionError, AssetNotFoundError
from .paths import SIDECAR_SUFFIX, AssetsRoot

PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_project_id(project_id: Any) -> str:
    """``project_id`` if it is a valid project name (it names a folder: no ``/``, never ``.``/``..``)."""
    if not isinstance(project_id, str) or not PROJECT_RE.match(project_id):
        raise ValueError(f"project_id {project_id!r} must be 1-64 letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit)")
    return project_id


UNSET: Any = object()  # "argument not given" where None means "clear it"
# keys of a metadata dict that are the asset's own fields (the original registry kept them in meta)
FIELD_KEYS = ("tags", "license", "origin", "version")
RIGHTS_VERSION = 1  # rows with an older rights_version get their rights re-derived by recover()
# rights filters of query_assets: parameter -> column (booleans 0/1; NULL = not stated, never matches)
RIGHTS_BOOL_FILTERS = {"credit_required": "credit_required", "derivatives": "derivatives_allowed",
                       "license_known": "license_known"}
# keys the registry derives and shows inside ``meta`` (never stored there)
DERIVED_META_KEYS = ("preview", "thumbnails")
SORT_COLUMNS = {"created_at": "created_at", "updated_at": "updated_at", "path": "path", "bytes": "bytes",
                "type": "type", "uid": "uid"}


def split_metadata(metadata: dict | None) -> tuple[dict, dict]:
    """``(free-form meta, fields)``: ``tags``, ``license``, ``origin`` and ``version`` inside a
    metadata dict are the asset's fields, not free-form keys (``preview``/``thumbnails`` are
    derived and dropped).  ``fields`` holds only the keys present: tags normalised (``None``
    clears them), an empty licence as ``""`` (clears it), origin as a string, version as an int."""
    meta = dict(metadata or {})
    fields: dict[str, Any] = {}
    for key in DERIVED_META_KEYS:
        meta.pop(key, None)
    if "tags" in meta:
        fields["tags"] = normalise_tags(meta.pop("tags"))
    if "license" in meta:
        value = meta.pop("license")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"metadata license must be a string or null, got {value!r}")
        fields["license"] = (value or "").strip()
    if "origin" in meta:
        value = meta.pop("origin")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"metadata origin must be a string or null, got {value!r}")
        if value and value.strip():
            fields["origin"] = value.strip()
    if "version" in meta:
        value = meta.pop("version")
        if value is not None:
            try:
                fields["version"] = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"metadata version must be an integer, got {value!r}") from None
    return meta, fields


def stated_terms(meta: dict, provenance: dict) -> tuple[dict, dict | None]:
    """``(meta without license_terms, the terms a pull or caller stated)``: ``license_terms`` in the
    metadata (a pull's normalised metadata carries them) or in the provenance; None when neither."""
    given = meta.get("license_terms", provenance.get("license_terms"))
    if "license_terms" in meta:
        meta = {k: v for k, v in meta.items() if k != "license_terms"}
    if given is None:
        return meta, None
    return meta, check_terms(given, default_source="provider")


def check_terms(terms: Any, *, default_source: str) -> dict:
    """Validated ``license_terms`` (unknown keys dropped; ``source`` defaults to ``default_source``)."""
    if not isinstance(terms, dict):
        raise ValueError(f"license_terms must be a JSON object, got {type(terms).__name__}")
    level = terms.get("commercial_use")
    if level is not None and level not in rights.COMMERCIAL_LEVELS:
        raise ValueError(f"license_terms.commercial_use must be one of {', '.join(rights.COMMERCIAL_LEVELS)} "
                         f"or null, got {level!r}")
    for key in ("credit_required", "derivatives_allowed", "relicense_allowed"):
        if terms.get(key) is not None and not isinstance(terms[key], bool):
            raise ValueError(f"license_terms.{key} must be true, false or null, got {terms[key]!r}")
    out = {key: terms.get(key) for key in rights.TERM_KEYS}
    if not out["source"] and any(out[k] is not None for k in rights.TERM_KEYS if k not in ("source",
                                                                                         "base_model_license")):
        out["source"] = default_source
    return out


def deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def encode_cursor(value: Any, uid: str) -> str:
    """The ``next_cursor`` of a page: its last row's sort value and uid."""
    return base64.urlsafe_b64encode(json.dumps([value, uid]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    """``(sort value, uid)`` of a cursor :func:`encode_cursor` made; ``ValueError`` for anything
    else (an object, a list, a number SQLite cannot hold, bytes that are not the registry's form)."""
    try:
        pad = "=" * (-len(cursor) % 4)
        value, uid = json.loads(base64.urlsafe_b64decode(cursor + pad))
        if not isinstance(uid, str) or isinstance(value, bool) or not isinstance(value, str | int | float | None):
            raise ValueError
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise ValueError
        if encode_cursor(value, uid) != cursor.rstrip("="):
            raise ValueError
        return value, uid
    except Exception:
        raise ValueError(f"invalid cursor {cursor[:80]!r}: pass next_cursor from the previous page unchanged") from None


def meta_view(rec: dict) -> dict:
    """An asset's ``meta`` as records, hook payloads and sidecars show it: the free-form
    metadata with the asset's fields (``tags``, ``license``, ``origin``, ``version``) and its
    ``preview`` (``paths`` ``{"256": ..., "512": ...}`` relative to the thumbnail root, and
    the ``default`` one) inside, as the original registry kept them."""
    view = dict(rec["meta"])
    view.update(tags=list(rec["tags"]), license=rec["license"], origin=rec["origin"], version=rec["version"])
    preview = dict(rec["preview"])
    if preview.get("thumbnails"):
        preview["paths"] = dict(preview["thumbnails"])
        preview["default"] = next(iter(preview["paths"].values()))
        view["thumbnails"] = dict(preview["paths"])
    elif preview.get("waveform"):
        preview["path"] = preview["default"] = preview["waveform"]
    view["preview"] = preview
    return view



PROBE_CAP = 20_000  # a filter tag's size is counted up to this (an index range of asset_tags, ~1 ms)
PAGE_DRIVE_MAX = 4_000  # a page is read from a tag's rows when the tag has at most this many assets
TEXT_INDEX_MIN = 3  # free text this long (characters) goes through the trigram index; shorter scans
TEXT_MAX = 256  # free text longer is refused (every route): SQLite's LIKE fails past 50,000 bytes of pattern,
# and the LIKE's re-check of a candidate costs up to the text's length times the row's
FILTER_TAGS_MAX = 200  # tags in one filter (any-mode: one IN list)
FILTER_ALL_TAGS_MAX = 32  # all-mode: a semi-join each; PostgreSQL plans 100 in 2.9 s (cubic), SQLite refuses ~800
TEXT = object()  # AssetFilter.driver(): the free text's index drives the query
TEXT_LIKE = "a.search_text LIKE ? ESCAPE '\\'"  # the free text's term: the scan, and the index's re-check
# a text too short for a trigram: PostgreSQL would read the whole GIN index for it (2.5x the scan at a million)
SHORT_TEXT_LIKE = "(a.search_text || '') LIKE ? ESCAPE '\\'"


def text_forms(needle: str) -> list[str]:
    """The forms a lower-cased free text is looked for in: composed and decomposed (macOS writes
    file names decomposed: ``café`` is then ``cafe`` + U+0301), each as typed and as JSON writes it
    inside the metadata (a ``"``, backslash or control character escaped); duplicates dropped."""
    forms = dict.fromkeys(unicodedata.normalize(form, needle) for form in ("NFC", "NFD"))
    return list(dict.fromkeys(f for n in forms for f in (n, json.dumps(n, ensure_ascii=False)[1:-1])))


TEXT_MATCH_TRIGRAMS = 12  # trigrams of a long text the index is asked for (the LIKE checks every candidate)


def trigram_query(needle: str) -> str:
    """The FTS5 query finding the rows that may hold ``needle`` (3+ characters): up to
    :data:`TEXT_MATCH_TRIGRAMS` of its distinct trigrams, spread over it, each a quoted string (every
    character literal), ANDed.  Not the whole text as one phrase: a phrase is matched position by
    position, which cost 3.5 s for a 256-character text against one asset of repetitive metadata;
    a few trigrams only intersect their row lists, and the text's LIKE keeps the answer exact."""
    grams = list(dict.fromkeys(needle[i:i + 3] for i in range(len(needle) - 2)))
    if len(grams) > TEXT_MATCH_TRIGRAMS:
        step = (len(grams) - 1) / (TEXT_MATCH_TRIGRAMS - 1)
        grams = [grams[round(k * step)] for k in range(TEXT_MATCH_TRIGRAMS)]
    return " AND ".join('"' + gram.replace('"', '""') + '"' for gram in grams)


class AssetFilter:
    """The WHERE terms of one filter, and the plan that reads them cheaply at any registry size.

    Without statistics SQLite walks an index of ``assets`` in sort order (type/licence ranges)
    and probes ``asset_tags`` for each row: fast when the tag is common, a scan of the whole range
    when it is rare (25 ms at a million assets) and for counts (1.3 s for one tag).  A rare tag
    (or one narrower than the other filters) instead drives the query: its rows in
    ``asset_tags`` (primary key), each asset by primary key, then a sort of those few rows.
    ``CROSS JOIN`` fixes that join order on SQLite; PostgreSQL plans it from its statistics.

    One tag with type/licence filters in ``created_at`` order (the gallery's default) needs
    neither: a tag's rows carry copies of those columns (:meth:`tag_ordered`), so the page is
    one index range of ``asset_tags`` in page order, whatever the tag's size, on both engines."""

    def __init__(self, db: Database, project_id: str, where: list[str], params: list[Any], all_tags: list[str],
                 any_tags: list[str], *, scans: bool, by_hash: bool, text_match: str | None = None, text_term: str = TEXT_LIKE,
                 copied_only: bool = False, tag_order: bool = False) -> None:
        self.db, self.project_id = db, project_id
        self.where, self.params = where, params  # terms on assets (the first is the project's)
        self.all_tags, self.any_tags = all_tags, any_tags
        self.scans = scans  # free text too short for its index: walking an index means reading every row
        self.by_hash = by_hash  # a primary-key lookup: nothing to choose
        self.text_match = text_match  # SQLite: the FTS5 query of the free text (besides its LIKE term)
        self.text_term = text_term  # the free text's term in ``where`` (one LIKE, or two ORed)
        self.text_exact: int | None = None  # the text's size once a probe counted it below its cap
        self.copied_only = copied_only  # every term is on a column asset_tags copies (type, license)
        self.tag_order = tag_order  # Records.tag_order

    def text_size(self, cap: int | None) -> int:
        """Rows of the trigram index matching the free text (every project's: an upper bound);
        a page and its count share one filter, so an exact size is counted once."""
        if self.text_exact is not None and (cap is None or self.text_exact < cap):
            return self.text_exact
        n = self.capped_count("assets_fts f", ["f.assets_fts MATCH ?"], [self.text_match], cap)
        if cap is None or n < cap:
            self.text_exact = n
        return n

    def capped_count(self, from_sql: str, where: list[str], params: list[Any], cap: int | None) -> int:
        """Rows matching, counting at most ``cap`` (None: all of them)."""
        if cap is None:
            row = self.db.query_one(f"SELECT COUNT(*) FROM {from_sql} WHERE {' AND '.join(where)}", tuple(params))
        else:
            sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM {from_sql} WHERE {' AND '.join(where)} LIMIT ?) capped"
            row = self.db.query_one(sql, (*params, cap))
        return row[0] if row is not None else 0

    def tag_size(self, tag: str, cap: int | None) -> int:
        return self.capped_count("asset_tags t", ["t.project_id = ?", "t.tag = ?"], [self.project_id, tag], cap)

    def driver(self, *, page: bool) -> str | None:
        """The tag to read the matches from, or None to walk an index of ``assets`` (always on
        PostgreSQL: its planner turns the EXISTS probe into the same tag-driven join from its
        statistics, and the size probes would cost a round trip each)."""
        if not (self.all_tags or self.text_match) or self.by_hash or getattr(self.db, "engine", "sqlite") != "sqlite":
            return None
        cap = PAGE_DRIVE_MAX + 1 if page else PROBE_CAP + 1
        sizes: list[tuple[int, Any]] = [(self.tag_size(t, cap), t) for t in self.all_tags]
        if self.text_match is not None:  # the free text's index drives like a tag (FTS5 rowids), counted
            sizes.append((self.text_size(min([cap, *(n + 1 for n, _ in sizes)])), TEXT))  # past no smaller tag
        size, tag = min(sizes, key=lambda s: s[0])
        if self.scans or size == 0:
            return tag
        if page and size > PAGE_DRIVE_MAX:  # a common tag: the walk finds a page within a few thousand rows
            return None
        where, params = self.where, self.params
        if self.text_match is not None:  # the text's LIKE is no index range
            at = where.index(self.text_term)
            skip = sum(term.count("?") for term in where[:at])
            where, params = where[:at] + where[at + 1:], params[:skip] + params[skip + self.text_term.count("?"):]
        if len(where) == 1:  # only the tags or the text narrow: the walk would pass every asset
            return tag
        rest = self.capped_count("assets a", where, params, size + 1)  # type/licence/rights range
        return tag if size < rest else None

    def tag_ordered(self, sort: str | None) -> bool:
        """Whether one tag's rows in ``asset_tags`` answer alone: one tag (all-mode), other terms only
        on the columns its rows copy from their asset (type, licence), sorted by ``created_at`` (or
        not sorted: a count).  Several tags keep the planner's choice of which one to read first."""
        return (self.tag_order and len(self.all_tags) == 1 and not self.any_tags and self.copied_only
                and not self.scans and not self.by_hash and sort in (None, "created_at"))

    def plan(self, *, page: bool, sort: str | None = None) -> tuple[str, list[str], list[Any]]:
        """``(FROM, WHERE terms, parameters)`` (fresh lists: callers append their cursor term);
        ``sort`` is the column the rows are read in order of (None: any order)."""
        if self.tag_ordered(sort):
            # a tag's rows carry their asset's type, license and created_at under the same names, so
            # the terms on assets read the same on them: a page is one range of asset_tags_created or
            # asset_tags_type_license_created (registry.007_tag_copies), in page order
            return "asset_tags a", [*self.where, "a.tag = ?"], [*self.params, self.all_tags[0]]
        drive = self.driver(page=page)
        if drive is None:
            from_sql, where, params = "assets a", list(self.where), list(self.params)
        elif drive is TEXT:  # the text's index rows, each asset by rowid (its LIKE re-checks the match)
            from_sql = "assets_fts f CROSS JOIN assets a"
            where, params = ["f.assets_fts MATCH ?", "a.rowid = f.rowid", *self.where], [self.text_match, *self.params]
        else:
            from_sql = "asset_tags d CROSS JOIN assets a"
            where = ["d.project_id = ?", "d.tag = ?", "a.project_id = d.project_id", "a.uid = d.uid", *self.where]
            params = [self.project_id, drive, *self.params]
        for tag in self.all_tags:
            if tag != drive:
                where.append("EXISTS (SELECT 1 FROM asset_tags t WHERE t.project_id = a.project_id"
                             " AND t.tag = ? AND t.uid = a.uid)")
                params.append(tag)
        if self.any_tags:
            where.append(f"EXISTS (SELECT 1 FROM asset_tags t WHERE t.project_id = a.project_id"
                         f" AND t.uid = a.uid AND t.tag IN ({','.join('?' * len(self.any_tags))}))")
            params.extend(self.any_tags)
        return from_sql, where, params

    def count(self, cap: int | None = None) -> tuple[int, bool]:
        """``(matches, capped)``: with ``cap``, at most ``cap`` are counted."""
        if len(self.all_tags) == 1 and len(self.where) == 1 and not self.any_tags:
            # one tag and nothing else: its rows in asset_tags are the answer (an index range, no asset read;
            # a tag row never outlives its asset: both go in one transaction)
            n = self.tag_size(self.all_tags[0], None if cap is None else cap + 1)
        else:
            n = self.capped_count(*self.plan(page=False), None if cap is None else cap + 1)
        return (n, False) if cap is None else (min(n, cap), n > cap)


class Records:
    """The rows of one project: the codec, the insert, and every query."""

    def __init__(self, db: Database, project_id: str, root: AssetsRoot) -> None:
        self.db = db
        self.project_id = project_id
        self.root = root
        # PostgreSQL reads a walked row from the heap before its tag semi-join: a page's uids first
        # (an index-only walk), then those rows by key.  SQLite defers the row read itself.
        self.late_row_lookup = getattr(db, "engine", "sqlite") != "sqlite"
        # a one-tag page from asset_tags' copies of the asset's columns: one index range in page order,
        # then the rows by key (AssetFilter.tag_ordered).  Both engines: at a million assets page p95
        # 54.7 -> 9.2 ms on PostgreSQL, 32.0 -> 11.7 ms on SQLite (docs/BENCHMARKS.md); False: the form before
        self.tag_order = True

    @classmethod
    def of(cls, registry: Any) -> Records:
        """The rows of an open :class:`~comfyvn.studio.core.asset_registry.AssetRegistry` (its
        database, project and assets root), for the queries its facade does not pass on."""
        return cls(registry.db, registry.project_id, AssetsRoot(registry.assets_root, registry.ws,
                                                               registry.project_id))

    # ------------------------------------------------------------------ codec
    def insert(self, conn, rec: dict) -> None:
        self.insert_many(conn, [rec])

    def insert_many(self, conn, recs: list[dict]) -> None:
        """Insert new rows (and their tags) inside the caller's transaction: one statement for
        the rows and one for the tags, whatever their number."""
        conn.executemany(
            "INSERT INTO assets(project_id, uid, type, path, hash, bytes, tags, license, origin, version, created_at,"
            " updated_at, meta, preview, provenance, search_text, sidecar_pending, license_terms, commercial_rank,"
            " credit_required, derivatives_allowed, license_known, rights_version)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?,?,?)",
            [(self.project_id, rec["uid"], rec["type"], rec["path"], rec["hash"], rec["bytes"], json.dumps(rec["tags"]),
              rec["license"], rec["origin"], rec["version"], rec["created_at"], rec["updated_at"],
              json.dumps(rec["meta"], ensure_ascii=False), json.dumps(rec["preview"]),
              json.dumps(rec["provenance"], ensure_ascii=False), self.search_text(rec),
              *self.rights_columns(rec), RIGHTS_VERSION) for rec in recs])
        self.write_tags(conn, recs)

    def write_tags(self, conn, recs: list[dict]) -> None:
        """Insert the tag rows of ``recs`` (as just written to ``assets``) with their copies of the
        asset's type, licence and created_at (registry.007_tag_copies; a trigger keeps them as the
        asset changes)."""
        rows = [(self.project_id, rec["uid"], t, rec["type"], rec["license"], rec["created_at"])
                for rec in recs for t in rec["tags"]]
        if rows:
            conn.executemany("INSERT INTO asset_tags(project_id, uid, tag, type, license, created_at)"
                             " VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING", rows)

    @staticmethod
    def rights_columns(rec: dict) -> tuple:
        """``(license_terms JSON, commercial_rank, credit_required, derivatives_allowed, license_known)``."""
        terms = rec["license_terms"]

        def flag(value: Any) -> int | None:
            return None if value is None else int(value)

        return (json.dumps(terms, ensure_ascii=False), rights.commercial_rank(terms.get("commercial_use")),
                flag(terms.get("credit_required")), flag(terms.get("derivatives_allowed")),
                int(rights.licence_known(rec["license"], terms)))

    @staticmethod
    def search_text(rec: dict) -> str:
        parts = [rec["path"], rec["type"], rec.get("license") or "", " ".join(rec["tags"]),
                 json.dumps(rec["meta"], ensure_ascii=False)]
        return " ".join(parts).lower()

    def row(self, uid: str, conn=None) -> dict | None:
        row = (conn or self.db.conn).execute("SELECT * FROM assets WHERE project_id = ? AND uid = ?",
                                             (self.project_id, uid)).fetchone()
        return self.decode(row) if row else None

    def require(self, uid: str, conn=None) -> dict:
        rec = self.row(uid, conn)
        if rec is None:
            raise AssetNotFoundError(f"no asset {uid!r} in project {self.project_id!r}")
        return rec

    def uid_at(self, rel: str, conn=None) -> str | None:
        """The uid of the asset registered at ``rel``, or None."""
        row = (conn or self.db.conn).execute("SELECT uid FROM assets WHERE project_id = ? AND path = ?",
                                             (self.project_id, rel)).fetchone()
        return row[0] if row is not None else None

    def check_path_free(self, conn, rel: str) -> None:
        """``AssetCollisionError`` when another asset is registered at ``rel``."""
        other = conn.execute("SELECT uid FROM assets WHERE project_id = ? AND path = ?",
                             (self.project_id, rel)).fetchone()
        if other is not None:
            raise AssetCollisionError(
                f"{rel!r} is already registered as asset {other[0]} but its file now has different bytes; "
                "run the enforcer (comfyvn-enforcer) to inspect it")

    @staticmethod
    def decode(row) -> dict:
        rec = dict(row)
        for key in ("tags", "meta", "preview", "provenance"):
            rec[key] = json.loads(rec[key]) if rec[key] else ({} if key != "tags" else [])
        rec.pop("search_text", None)
        stored = json.loads(rec.get("license_terms") or "{}")
        rec["license_terms"] = {key: stored.get(key) for key in rights.TERM_KEYS}
        rec["license_known"] = bool(rec.get("license_known"))
        for key in ("commercial_rank", "credit_required", "derivatives_allowed", "rights_version"):
            rec.pop(key, None)  # indexed copies of license_terms
        return rec

    def public(self, rec: dict) -> dict:
        out = {k: v for k, v in rec.items() if k not in ("sidecar_pending", "project_id")}
        out["project_id"] = self.project_id
        out["abs_path"] = self.root.abs_str(rec["path"])
        out["sidecar"] = self.root.sidecar_str(rec["path"])
        out["meta"] = meta = meta_view(rec)
        # the original registry's keys: id, thumb (relative to THUMB_ROOT) and links (relative paths)
        preview = meta["preview"]
        out["id"] = rec["uid"]
        out["thumb"] = preview.get("default")
        links: dict[str, Any] = {"file": rec["path"], "sidecar": rec["path"] + SIDECAR_SUFFIX}
        if out["thumb"]:
            links["thumbnail"] = out["thumb"]
        if preview.get("paths"):
            links["thumbnails"] = dict(preview["paths"])
        out["links"] = links
        return out

    def payload(self, rec: dict, *, include_meta: bool) -> dict:
        abs_path = self.root.abs_str(rec["path"])
        payload = {"uid": rec["uid"], "type": rec["type"], "path": abs_path}
        if include_meta:
            payload["meta"] = meta_view(rec)
        payload["sidecar"] = self.root.sidecar_str(rec["path"])
        return payload

    def sidecar_payload(self, rec: dict) -> dict:
        return {"uid": rec["uid"], "type": rec["type"], "sidecar": self.root.sidecar_str(rec["path"]),
                "rel_path": rec["path"]}

    # ------------------------------------------------------------------ queries
    def find_by_hash(self, digest: str) -> dict | None:
        return self.find_by_any_hash(digest)  # every hash form (comfyvn.library.aliases)

    def find_by_any_hash(self, value: str, *, strict: bool = False) -> dict | None:
        """The asset whose file shows ``value`` in any hash form: SHA-256, BLAKE3, CRC32, AutoV1,
        AutoV2, AutoV3, full or as the tools display them, any case, with ``blake3:`` /
        ``sha256:`` tags or A1111's brackets.  None when no asset does; text that is no hash gives
        None, or ``ValueError`` with the reason when ``strict``."""
        conn = self.db.conn
        try:
            shas, query = candidate_sha256s(conn, str(value))
        except ValueError:
            if strict:
                raise
            return None
        for sha in shas:  # the uid is the digest's first 16 digits: a primary-key lookup each
            row = conn.execute("SELECT * FROM assets WHERE project_id = ? AND uid = ? AND hash = ?",
                               (self.project_id, sha[:16], sha)).fetchone()
            if row is not None:
                return self.public(self.decode(row))
        if {"autov2", "sha256_short"} & set(query.forms):  # SHA-256 prefixes: files hashed before aliases
            row = conn.execute("SELECT * FROM assets WHERE project_id = ? AND uid >= ? AND uid < ? ORDER BY uid"
                               " LIMIT 1", (self.project_id, query.value, query.value + "g")).fetchone()
            if row is not None:
                return self.public(self.decode(row))
        return None

    def query_assets(self, *, asset_type: str | None = None, tags: Iterable[str] | str | None = None,
                     tags_mode: str = "all", license: str | None = None, text: str | None = None,
                     hash: str | None = None, limit: int = 50, offset: int = 0, cursor: str | None = None,
                     sort: str = "created_at", descending: bool = True, with_total: bool = False,
                     commercial_use: str | None = None, credit_required: bool | None = None,
                     derivatives: bool | None = None, license_known: bool | None = None,
                     total_cap: int | None = None) -> dict:
        """One page of assets: ``{"items", "next_cursor", "total"?}`` (indexed SQL, keyset cursor).

        Rights filters: ``commercial_use`` keeps assets allowing at least that level (``none <
        image < rent-civit < rent < sell``); ``credit_required``, ``derivatives`` (derivatives
        allowed) and ``license_known`` match the term exactly.  A term not stated matches no
        level and neither true nor false.

        ``total_cap`` (with ``with_total``) counts at most that many matches: ``total`` is then
        ``min(matches, total_cap)`` and ``total_capped`` says whether there were more (a pager
        shows "10,000+" instead of counting a million rows on every filter change)."""
        if not 1 <= int(limit) <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        if total_cap is not None and (isinstance(total_cap, bool) or not isinstance(total_cap, int) or total_cap < 1):
            raise ValueError(f"total_cap must be a positive integer or None, got {total_cap!r}")
        filters = self.filter_sql(asset_type=asset_type, tags=tags, tags_mode=tags_mode, license=license, text=text,
                                  hash=hash, commercial_use=commercial_use, credit_required=credit_required,
                                  derivatives=derivatives, license_known=license_known)
        col, order = self.order_by(sort, descending)
        from_sql, where, params = filters.plan(page=True, sort=col)
        if cursor:
            value, uid = decode_cursor(cursor)
            op = "<" if descending else ">"
            where.append(f"(a.{col}, a.uid) {op} (?, ?)")  # a row value: an index range, not a filter
            params.extend([value, uid])
        page_terms = (f"FROM {from_sql} WHERE {' AND '.join(where)} ORDER BY a.{col} {order}, a.uid {order}"
                      f" LIMIT ? OFFSET ?")
        params.extend([int(limit) + 1, 0 if cursor else int(offset)])
        if self.late_row_lookup or filters.tag_ordered(col):  # the rows by key after the page's uids
            sql = (f"SELECT a.* FROM (SELECT a.uid, a.{col} AS sort_key {page_terms}) p JOIN assets a"
                   f" ON a.project_id = ? AND a.uid = p.uid ORDER BY p.sort_key {order}, p.uid {order}")
            params.append(self.project_id)
        else:
            sql = f"SELECT a.* {page_terms}"
        rows = self.db.query(sql, tuple(params))
        items = [self.public(self.decode(r)) for r in rows[:limit]]
        page: dict[str, Any] = {"items": items, "next_cursor": None}
        if len(rows) > limit and items:
            last = items[-1]
            page["next_cursor"] = encode_cursor(last[col], last["uid"])
        if with_total and not cursor and not offset and len(rows) <= limit:
            n = len(rows)  # the whole result is on this page: nothing to count
            page["total"], capped = (n, False) if total_cap is None else (min(n, total_cap), n > total_cap)
        elif with_total:
            page["total"], capped = filters.count(total_cap)
        if with_total:
            if total_cap is not None:
                page["total_capped"] = capped
        return page

    def matching_uids(self, *, sort: str = "created_at", descending: bool = True, limit: int | None = None,
                      **filters: Any) -> list[str]:
        """The uids of every asset matching the filters of :meth:`query_assets`, in its order, in
        one query that reads ids only ("select all matching"); ``limit`` keeps the first ones."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        where = self.filter_sql(**filters)
        col, order = self.order_by(sort, descending)
        from_sql, clauses, params = where.plan(page=limit is not None, sort=col)
        sql = f"SELECT a.uid FROM {from_sql} WHERE {' AND '.join(clauses)} ORDER BY a.{col} {order}, a.uid {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [r[0] for r in self.db.conn.execute(sql, tuple(params))]

    @staticmethod
    def order_by(sort: str, descending: bool) -> tuple[str, str]:
        if sort not in SORT_COLUMNS:
            raise ValueError(f"sort must be one of {', '.join(SORT_COLUMNS)}")
        return SORT_COLUMNS[sort], "DESC" if descending else "ASC"

    def filter_sql(self, *, asset_type: str | None = None, tags: Iterable[str] | str | None = None,
                   tags_mode: str = "all", license: str | None = None, text: str | None = None,
                   hash: str | None = None, commercial_use: str | None = None, credit_required: bool | None = None,
                   derivatives: bool | None = None, license_known: bool | None = None) -> AssetFilter:
        """The WHERE terms of :meth:`query_assets`' filters (validated)."""
        if tags_mode not in ("all", "any"):
            raise ValueError("tags_mode must be 'all' or 'any'")
        where = ["a.project_id = ?"]
        params: list[Any] = [self.project_id]
        if asset_type:
            where.append("a.type = ?")
            params.append(asset_type)
        if license is not None:
            if license == "":
                where.append("a.license IS NULL")
            else:
                where.append("a.license = ?")
                params.append(license)
        copied_terms = len(where)  # project, type, licence: columns a tag's row copies from its asset
        if commercial_use is not None:
            rank = rights.commercial_rank(commercial_use)
            if rank is None:
                raise ValueError(f"commercial_use must be one of {', '.join(rights.COMMERCIAL_LEVELS)}, "
                                 f"got {commercial_use!r}")
            # an IN list, not ">=": each level is an index range already in created_at order (x100 faster)
            levels = range(rank, len(rights.COMMERCIAL_LEVELS))
            where.append(f"a.commercial_rank IN ({','.join('?' * len(levels))})")
            params.extend(levels)
        for name, value in (("credit_required", credit_required), ("derivatives", derivatives),
                            ("license_known", license_known)):
            if value is None:
                continue
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            where.append(f"a.{RIGHTS_BOOL_FILTERS[name]} = ?")
            params.append(int(value))
        if hash:
            where.append("a.uid = ? AND a.hash = ?")  # primary key: uid = first 16 hex digits
            params.extend([hash.lower()[:16], hash.lower()])
        tag_list = normalise_tags(tags)
        if tags_mode == "all" and len(tag_list) > FILTER_ALL_TAGS_MAX:
            raise ValueError(f"a filter takes at most {FILTER_ALL_TAGS_MAX} tags that must all match "
                             f"(tags_mode all), got {len(tag_list)}")
        if len(tag_list) > FILTER_TAGS_MAX:
            raise ValueError(f"a filter takes at most {FILTER_TAGS_MAX} tags, got {len(tag_list)}")
        text_match, text_term, short_text = None, TEXT_LIKE, False
        if text:  # a case-insensitive substring of search_text (docs/ASSET_REGISTRY.md, "Free text")
            if "\0" in text:
                raise ValueError("text must not contain NUL characters")
            if len(text) > TEXT_MAX:
                raise ValueError(f"text must be at most {TEXT_MAX} characters, got {len(text)}")
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("text must be valid Unicode (it has a lone surrogate)") from None
            needle = text.lower()
            needles = text_forms(needle)
            short_text = len(needle) < TEXT_INDEX_MIN
            engine = getattr(self.db, "engine", "sqlite")
            like = SHORT_TEXT_LIKE if short_text and engine == "postgresql" else TEXT_LIKE
            text_term = like if len(needles) == 1 else "(" + " OR ".join([like] * len(needles)) + ")"
            where.append(text_term)
            params.extend("%" + n.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%" for n in needles)
            if not short_text and engine == "sqlite":
                text_match = " OR ".join(f"({trigram_query(n)})" for n in needles) if len(needles) > 1 \
                    else trigram_query(needle)
        all_tags = tag_list if tags_mode == "all" or len(tag_list) == 1 else []
        return AssetFilter(self.db, self.project_id, where, params, all_tags, [] if all_tags else tag_list,
                           scans=short_text, by_hash=bool(hash), text_match=text_match, text_term=text_term,
                           copied_only=len(where) == copied_terms, tag_order=self.tag_order)

    def list_assets(self, asset_type: str | None = None, *, hash_value: str | None = None,
                    tags: Iterable[str] | str | None = None, text: str | None = None, limit: int | None = None,
                    **filters: Any) -> list[dict]:
        """Assets matching the filters of :meth:`query_assets` (``hash_value`` is ``hash``).

        ``limit=None`` returns every match (read in pages of 1000), as the original did."""
        if hash_value is not None:
            filters["hash"] = hash_value
        if limit is not None:
            return self.query_assets(asset_type=asset_type, tags=tags, text=text, limit=limit, **filters)["items"]
        if filters.get("offset") or filters.get("cursor"):
            raise ValueError("offset/cursor need a limit (or use query_assets)")
        items: list[dict] = []
        cursor = None
        while True:
            page = self.query_assets(asset_type=asset_type, tags=tags, text=text, limit=1000, cursor=cursor,
                                     **filters)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return items

    def iter_assets(self, batch: int = 500) -> Iterator[dict]:
        """Every asset of the project, in path order, read in batches."""
        cursor = None
        while True:
            page = self.query_assets(limit=batch, cursor=cursor, sort="path", descending=False)
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def count(self) -> int:
        row = self.db.query_one("SELECT COUNT(*) FROM assets WHERE project_id = ?", (self.project_id,))
        return row[0] if row is not None else 0

    def facets(self) -> dict[str, list[tuple[str, int]]]:
        """Types, tags and licences with counts (for filter drop-downs)."""
        q = self.db.query
        pid = (self.project_id,)
        return {
            "types": [(r[0], r[1]) for r in q("SELECT type, COUNT(*) FROM assets WHERE project_id = ? GROUP BY type"
                                              " ORDER BY type", pid)],
            "licenses": [(r[0], r[1]) for r in q("SELECT license, COUNT(*) FROM assets WHERE project_id = ?"
                                                 " AND license IS NOT NULL GROUP BY license ORDER BY license", pid)],
            "tags": [(r[0], r[1]) for r in q("SELECT tag, COUNT(*) FROM asset_tags WHERE project_id = ? GROUP BY tag"
                                             " ORDER BY COUNT(*) DESC, tag LIMIT 500", pid)],
        }

    def to_dataframe(self, **filters: Any):
        """Matching assets as a pandas DataFrame (every asset when no filter is given)."""
        import pandas as pd

        rows = list(self.iter_assets()) if not filters else self.list_assets(**{"limit": 1000, **filters})
        columns = ["uid", "type", "path", "hash", "bytes", "tags", "license", "origin", "version", "created_at",
                   "updated_at", "meta", "provenance", "sidecar"]
        frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
        for col in ("created_at", "updated_at"):
            frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
        return frame


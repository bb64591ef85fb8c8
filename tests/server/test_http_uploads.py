"""Upload routes: multipart bodies, cleaned names, config errors, unknown projects, cursors.

Each test closes a hole of issue 11 (points 4-6) found against the running server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
from server_helpers import assert_error, png_bytes

from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry

UPLOAD_ROUTES = ["/assets/upload", "/api/ingest/upload"]


def multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict[str, str]]:
    """A ``multipart/form-data`` body as ``curl -F`` sends it: (field name, file name, content) parts."""
    files = [(name, (filename, content, "application/octet-stream") if filename else (None, content))
             for name, filename, content in parts]
    request = httpx.Request("POST", "http://localhost/", files=files)
    return request.read(), {"Content-Type": request.headers["Content-Type"]}


def stored(reply_json: dict) -> Path:
    return Path(reply_json.get("abs_path") or reply_json.get("staging_path"))


def stored_name(reply_json: dict) -> str:
    """The stored file's name (a staged file's name starts with its job id and a dash)."""
    name = stored(reply_json).name
    return name if reply_json.get("abs_path") else name.split("-", 1)[1]


def no_upload_leftovers(ws) -> None:
    uploads = ws.data_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == [], list(uploads.iterdir())


@pytest.mark.parametrize("route", UPLOAD_ROUTES)
async def test_multipart_body_is_parsed_not_stored_raw(api, ingest_on, route):
    content = png_bytes((9, 8, 7), (300, 200)) + os.urandom(3 * 1024 * 1024)  # several flushes, several chunks
    body, headers = multipart(("file", "holiday.png", content))
    r = await api("POST", route, raw=body, headers=headers)
    assert r.code == 201, r.body
    path = stored(r.json)
    assert stored_name(r.json) == "holiday.png"  # the part's file name, no ?filename= given
    assert path.read_bytes() == content  # the file, not the multipart envelope
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(content).hexdigest()
    no_upload_leftovers(ingest_on)


async def test_multipart_query_filename_wins_and_single_part_rules(api, ws, ingest_on):
    content = b"model weights " * 1000
    body, headers = multipart(("file", "ignored.bin", content))
    r = await api("POST", "/assets/upload", raw=body, headers=headers,
                  params={"filename": "chosen.safetensors", "asset_type": "models"})
    assert r.code == 201, r.body
    assert r.json["path"] == "models/chosen.safetensors" and Path(r.json["abs_path"]).read_bytes() == content

    body, headers = multipart(("file", "a.png", png_bytes()), ("file2", "b.png", png_bytes((1, 1, 1))))
    assert_error(await api("POST", "/assets/upload", raw=body, headers=headers), 400, "invalid_multipart",
                 "more than one part")
    # text fields: /assets/upload takes the original's known few (tests/compat); others are refused
    body, headers = multipart(("file", "a.png", png_bytes((2, 2, 2))), ("tags", None, b"hero"))
    assert_error(await api("POST", "/assets/upload", raw=body, headers=headers), 400, "invalid_multipart",
                 "unknown form field 'tags'")
    body, headers = multipart(("file", "a.png", png_bytes((2, 2, 2))), ("asset_type", None, b"images"))
    assert_error(await api("POST", "/api/ingest/upload", raw=body, headers=headers), 400, "invalid_multipart",
                 "more than one part")
    body, headers = multipart(("file", "cut.png", png_bytes((3, 3, 3))))
    assert_error(await api("POST", "/assets/upload", raw=body[:-40], headers=headers), 400, "invalid_multipart",
                 "closing boundary")
    body, headers = multipart(("file", None, png_bytes((4, 4, 4))))  # a plain field: no name anywhere
    assert_error(await api("POST", "/assets/upload", raw=body, headers=headers), 400, "invalid_parameter",
                 "filename")
    body, headers = multipart(("file", "empty.png", b""))
    assert_error(await api("POST", "/assets/upload", raw=body, headers=headers), 400, "empty_upload")
    assert_error(await api("POST", "/assets/upload", raw=b"x", headers={"Content-Type": "multipart/form-data"}),
                 400, "invalid_multipart", "boundary")
    body, headers = multipart(("file", "w.xyz", b"weights"))
    assert_error(await api("POST", "/assets/upload", raw=body, headers=headers), 400, "invalid_parameter",
                 "asset_type")  # a name with no default type, known only once the part was read
    listed = (await api("GET", "/assets")).json["items"]
    assert [a["path"] for a in listed] == ["models/chosen.safetensors"]
    no_upload_leftovers(ws)


@pytest.mark.parametrize("route", UPLOAD_ROUTES)
async def test_multipart_part_headers_are_bounded(api, ingest_on, route):
    """A part whose headers never end (one endless header value) is refused, not held in memory
    (python-multipart's own bound on a header line; a regression test, not a new rule)."""
    boundary = "cvnboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            f"X-Padding: {'a' * (2 * 1024 * 1024)}\r\n\r\n").encode() + png_bytes() + f"\r\n--{boundary}--\r\n".encode()
    r = await api("POST", route, raw=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert_error(r, 400, "invalid_multipart", "Maximum header size exceeded")
    no_upload_leftovers(ingest_on)


def test_multipart_text_fields_are_counted():
    """At most MAX_FORM_FIELDS text fields, whatever names a route allows."""
    from server_ext.handlers.uploads import MAX_FORM_FIELDS, MultipartFile

    names = [f"f{i}" for i in range(MAX_FORM_FIELDS + 1)]
    body, headers = multipart(*[(name, None, b"v") for name in names], ("file", "a.bin", b"data"))
    boundary = headers["Content-Type"].split("boundary=", 1)[1].encode()
    parser = MultipartFile(boundary, frozenset(names))
    parser.feed(body)
    assert parser.error == f"the multipart/form-data body holds more than {MAX_FORM_FIELDS} text fields"
    body, headers = multipart(*[(name, None, b"v") for name in names[:-1]], ("file", "a.bin", b"data"))
    parser = MultipartFile(headers["Content-Type"].split("boundary=", 1)[1].encode(), frozenset(names))
    parser.feed(body)
    parser.check_complete()  # exactly MAX_FORM_FIELDS: accepted
    assert parser.fields == dict.fromkeys(names[:-1], "v") and parser.take() == b"data"


BIDI_AND_ZERO_WIDTH = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
                       "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\ufeff", "\u2060", "\u061c"]


@pytest.mark.parametrize("route", UPLOAD_ROUTES)
async def test_upload_names_lose_bidi_overrides_and_zero_width_characters(api, ingest_on, route):
    names = []
    for i, char in enumerate(BIDI_AND_ZERO_WIDTH):
        r = await api("POST", route, raw=f"content {i}".encode(),
                      params={"filename": f"invoice{i}{char}gpj.exe", "asset_type": "misc"})
        assert r.code == 201, r.body
        names.append(stored_name(r.json))
    assert names == [f"invoice{i}gpj.exe" for i in range(len(BIDI_AND_ZERO_WIDTH))]
    body, headers = multipart(("file", "pay\u202egnp.sh\u200b", b"multipart name"))
    r = await api("POST", route, raw=body, headers=headers, params={"asset_type": "misc"})
    assert r.code == 201 and stored_name(r.json) == "paygnp.sh", r.body
    assert_error(await api("POST", route, raw=b"x", params={"filename": "\u202e\u200b\ufeff"}), 400,
                 "invalid_parameter", "no usable characters")


@pytest.mark.parametrize("route,method", [("/assets/upload", "POST"), ("/api/ingest/upload", "POST"),
                                          ("/assets/{uid}/thumbnail", "GET")])
async def test_config_error_on_upload_and_thumbnail_routes_is_a_clear_config_error(api, ingest_on, make_png,
                                                                                   route, method):
    reg = AssetRegistry(ws=ingest_on)
    rec = reg.register_file(make_png(), "images")
    assert AssetRegistry.wait_for_thumbnails(30)
    good = ingest_on.config_file.read_text(encoding="utf-8")
    ingest_on.config_file.write_text('{"registry": {"thumbnail_sizes": [256,', encoding="utf-8")
    try:
        r = await api(method, route.format(uid=rec["uid"]), params={"filename": "a.png"},
                      raw=png_bytes() if method == "POST" else None)
        assert_error(r, 500, "config_error", str(ingest_on.config_file), "not valid JSON")
    finally:
        ingest_on.config_file.write_text(good, encoding="utf-8")
    no_upload_leftovers(ingest_on)


async def test_reads_of_an_unknown_project_create_nothing(api, ws, make_png):
    db = open_store(ws)

    def traces() -> tuple[bool, int, int]:
        return ((ws.assets_root / "brandnew").exists(),
                db.query_one("SELECT COUNT(*) FROM assets WHERE project_id = 'brandnew'")[0],
                len(list(ws.thumbnails_dir.glob("brandnew*"))))

    r = await api("GET", "/assets", params={"project": "brandnew", "total": "true"})
    assert r.code == 200 and r.json == {"items": [], "next_cursor": None, "total": 0, "project": "brandnew"}
    for path in ("/assets/0123456789abcdef", "/assets/0123456789abcdef/sidecar",
                 "/assets/0123456789abcdef/thumbnail", "/assets/0123456789abcdef/download"):
        assert_error(await api("GET", path, params={"project": "brandnew"}), 404, "asset_not_found", "brandnew")
    assert_error(await api("DELETE", "/assets/0123456789abcdef", params={"project": "brandnew"}), 404,
                 "asset_not_found")
    assert (await api("GET", "/assets/debug/hooks", params={"project": "brandnew"})).json["hooks"] == {}
    assert_error(await api("GET", "/assets", params={"project": "../x"}), 400, "invalid_request", "project")
    assert traces() == (False, 0, 0)
    # a write creates the project; reads then see it
    r = await api("POST", "/assets/register", params={"project": "brandnew"},
                  body={"path": str(make_png()), "asset_type": "images"})
    assert r.code == 201, r.body
    listed = await api("GET", "/assets", params={"project": "brandnew"})
    assert [a["uid"] for a in listed.json["items"]] == [r.json["uid"]]


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_ASSET_CURSORS = {
    "object-value": _cursor([{"a": 1}, "0123456789abcdef"]),
    "list-value": _cursor([[1, 2], "0123456789abcdef"]),
    "huge-int": _cursor([2**70, "0123456789abcdef"]),
    "object": _cursor({"a": 1, "b": 2}),
    "bool-value": _cursor([True, "0123456789abcdef"]),
    "not-base64": "!!!",
    "raw-json-object": '{"a": 1}',
}


@pytest.mark.parametrize("kind", sorted(BAD_ASSET_CURSORS))
async def test_asset_list_cursor_of_the_wrong_shape_is_a_400(api, make_png, kind):
    r = await api("GET", "/assets", params={"cursor": BAD_ASSET_CURSORS[kind]})
    assert r.code == 400 and r.json["error"] in ("invalid_parameter", "invalid_request"), (r.code, r.body)
    assert "cursor" in r.json["message"]


@pytest.mark.parametrize("cursor", ["9" * 100, "-1", '{"a": 1}', "1.5", "[1]", "9" * 5000])
async def test_ingest_jobs_cursor_of_the_wrong_shape_is_a_400(api, ingest_on, cursor):
    r = await api("GET", "/api/ingest/jobs", params={"cursor": cursor})
    assert_error(r, 400, "invalid_parameter", "cursor")

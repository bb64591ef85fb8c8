"""Streamed uploads: the body goes to a temporary file (written off the loop), hashed on the way.

The file lands at ``data/uploads/.<random>/<sanitised name>`` (same file system as the
assets root and the staging folder, so handing it on is a rename), and the folder is
removed when the request ends, whatever happened.

The body is either the file's raw bytes (``?filename=`` names it) or a ``multipart/form-data``
body (``curl -F file=@picture.png``) holding exactly one file part, parsed as it streams by
python-multipart (never buffered whole); the part's file name is used when ``?filename=`` is
not given.  A route may also take a few small named text fields (:attr:`StreamedUploadMixin.form_fields`:
at most :data:`MAX_FORM_FIELDS`, :data:`MAX_FORM_FIELD_BYTES` each, known names only, each once);
any other part is refused with 400.  Limits (``uploads.*`` in the workspace config): at most ``max_concurrent`` uploads
per server (503 + ``Retry-After`` beyond, answered before the body is read, with
``Connection: close``), and a body slower than ``min_bytes_per_s`` over ``slow_window_s``
seconds, or unfinished after ``max_seconds``, is cut with 408 and its file removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from tornado.ioloop import IOLoop

from comfyvn.names import clean_filename

from .base import ApiError, BodyPolicy, ComfyvnAPIHandler

FLUSH_BYTES = 1024 * 1024
#: bounds on the text fields a multipart upload may carry beside its one file part
MAX_FORM_FIELDS = 8
MAX_FORM_FIELD_BYTES = 64 * 1024
RETRY_AFTER_BUSY = "5"
def sanitise_filename(raw: str | None) -> str:
    """A safe base name from a client-supplied file name (:func:`comfyvn.names.clean_filename`,
    the one file-name rule); 400 when nothing usable is left or it names a sidecar."""
    if not raw:
        raise ApiError(400, "invalid_parameter", "filename is required (?filename=picture.png)")
    name = clean_filename(raw)
    if not name:
        raise ApiError(400, "invalid_parameter", f"filename {raw!r} has no usable characters")
    if name.endswith(".asset.json"):
        raise ApiError(400, "invalid_parameter", "filename may not end with .asset.json (reserved for sidecars)")
    return name


class MultipartFile:
    """The one file part (and the allowed text fields) of a streamed ``multipart/form-data`` body.

    :meth:`feed` parses a chunk; the file bytes it found are then taken with :meth:`take`, the text
    fields read from :attr:`fields`.  A part is a text field when it has no file name, is not named
    ``file`` and its name is one of ``text_fields``; every other part is the file.  More than one
    file part, an unknown, repeated, oversized or non-UTF-8 field, or more than
    :data:`MAX_FORM_FIELDS` fields set :attr:`error` (and the rest of the body is ignored).
    """

    def __init__(self, boundary: bytes, text_fields: frozenset[str] = frozenset()) -> None:
        self.filename: str | None = None  # the file part's Content-Disposition filename
        self.headers_done = False  # the file part's headers were read
        self.ended = False
        self.error: str | None = None
        self.fields: dict[str, str] = {}
        self._text_fields = text_fields
        self._parts = 0
        self._file_parts = 0
        self._in_field: str | None = None  # name of the text field being read
        self._data = bytearray()
        self._field_data = bytearray()
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_end": self._end})

    def feed(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            self._fail(f"malformed multipart/form-data body: {exc}")

    def take(self) -> bytes:
        data, self._data = bytes(self._data), bytearray()
        return data

    def check_complete(self) -> None:
        """After the whole body: 400 unless exactly one file part, and the closing boundary, came."""
        if self.error is None and self._file_parts == 0:
            self._fail("the multipart/form-data body holds no file part; send one file (curl -F file=@picture.png)")
        if self.error is None and not self.ended:
            self._fail("the multipart/form-data body ends before its closing boundary (cut short?)")
        if self.error is not None:
            raise ApiError(400, "invalid_multipart", self.error)

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self._data = bytearray()
        self._field_data = bytearray()

    def _part_begin(self) -> None:
        self._parts += 1
        self._headers = {}
        if self._parts > 1 and not self._text_fields:
            self._fail("the multipart/form-data body holds more than one part; send exactly one file per request "
                       "(give asset_type, tags... as query parameters)")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        if self._in_field is None:
            self._data += data[start:end]
            return
        self._field_data += data[start:end]
        if len(self._field_data) > MAX_FORM_FIELD_BYTES:
            self._fail(f"the form field {self._in_field!r} is larger than {MAX_FORM_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        name, self._in_field = self._in_field, None
        if name is None or self.error is not None:
            return
        try:
            self.fields[name] = bytes(self._field_data).decode("utf-8")
        except UnicodeDecodeError:
            self._fail(f"the form field {name!r} is not UTF-8 text")
        self._field_data = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field, self._value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        if self.error is not None:
            return
        disposition, params = parse_options_header(self._headers.get("content-disposition", b""))
        if disposition != b"form-data":
            self._fail("the multipart part has no 'Content-Disposition: form-data' header")
            return
        raw = params.get(b"filename")
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if raw is None and name != "file" and self._text_fields:
            self._text_part(name)
            return
        self._file_parts += 1
        if self._file_parts > 1:
            self._fail("the multipart/form-data body holds more than one part carrying a file; "
                       "send exactly one file per request")
            return
        self.filename = raw.decode("utf-8", "replace") if raw else None
        self.headers_done = True

    def _text_part(self, name: str) -> None:
        if name not in self._text_fields:
            self._fail(f"unknown form field {name!r}; this route takes a part named 'file' and the text fields "
                       f"{', '.join(sorted(self._text_fields))}")
        elif name in self.fields:
            self._fail(f"the form field {name!r} is given twice")
        elif len(self.fields) >= MAX_FORM_FIELDS:
            self._fail(f"the multipart/form-data body holds more than {MAX_FORM_FIELDS} text fields")
        else:
            self._in_field = name

    def _end(self) -> None:
        self.ended = True


class StreamedUploadMixin(ComfyvnAPIHandler):
    """Base of the upload routes: the body (raw, or one multipart file part) is the file."""

    #: text fields a multipart body may carry beside the file (none: the file must be the only part);
    #: after :meth:`finish_upload` they are in :attr:`form`
    form_fields: frozenset[str] = frozenset()
    form: dict[str, str]

    filename: str | None = None
    upload_path: Path | None = None
    upload_digest: str = ""
    upload_bytes: int = 0  # body bytes received
    file_bytes: int = 0  # of which file content (a multipart body also has part headers)
    _upload_dir: Path | None = None
    _fh: Any = None
    _buffer: bytearray
    _hash: Any = None
    _gone = False
    _slot = False
    _multipart: MultipartFile | None = None
    _body_error: ApiError | None = None

    def body_limit(self) -> int:
        return self.services.max_upload_bytes()

    def body_policy(self) -> BodyPolicy | None:
        if self.request.method != "POST":
            return None
        limits = self.services.upload_limits()
        return BodyPolicy(min_bytes_per_s=limits["min_bytes_per_s"], window_s=limits["slow_window_s"],
                          max_seconds=limits["max_seconds"])

    async def start_body(self) -> None:
        if self.request.method != "POST":  # answered before a byte of a body is read or stored
            raise ApiError(405, "method_not_allowed", f"{self.request.method} is not allowed here; uploads are POST")
        self._multipart = self._multipart_parser()
        raw_name = self.get_query_argument("filename", None)
        if self._multipart is None or raw_name:
            self.filename = sanitise_filename(raw_name)
        self.validate_upload_params()
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._io_lock = threading.Lock()
        if not self.services.acquire_upload_slot():
            raise ApiError(503, "uploads_busy",
                           f"{self.services.upload_limits()['max_concurrent']} uploads are already in progress on "
                           f"this server (uploads.max_concurrent); retry in {RETRY_AFTER_BUSY} s",
                           {"Retry-After": RETRY_AFTER_BUSY}, drain=False)
        self._slot = True
        if self._multipart is None:
            assert self.filename is not None  # sanitise_filename above gave it (or answered 400)
            await self._open_upload(self.filename)

    def _multipart_parser(self) -> MultipartFile | None:
        ctype, params = parse_options_header(self.request.headers.get("Content-Type", ""))
        if ctype != b"multipart/form-data":
            return None
        boundary = params.get(b"boundary")
        if not boundary or len(boundary) > 200:
            raise ApiError(400, "invalid_multipart", "multipart/form-data needs a boundary parameter of "
                                                     "1-200 characters in its Content-Type")
        return MultipartFile(boundary, self.form_fields)

    def validate_upload_params(self) -> None:
        """Check query parameters before any byte is stored (subclasses override)."""

    async def _open_upload(self, name: str) -> None:
        self._upload_dir, self.upload_path, self._fh = await IOLoop.current().run_in_executor(
            self.services.executor, self._open_temp, name)
        if self._gone:  # the client left while the file was being created
            self.services.executor.submit(self._cleanup)

    def _open_temp(self, name: str) -> tuple[Path, Path, Any]:
        self.services.uploads_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.services.uploads_dir))
        path = folder / name
        return folder, path, open(path, "xb")  # noqa: SIM115 - closed in _finish_file/_cleanup

    async def body_chunk(self, chunk: bytes) -> None:
        if (self._finished or self._too_large or self._gone or self._body_error is not None
                or self._hash is None):  # refused before start_body finished: nothing is stored
            return
        self.upload_bytes += len(chunk)
        if self.upload_bytes > self.body_limit():
            self._too_large = True
            self._buffer = bytearray()
            return
        data = chunk
        mp = self._multipart
        if mp is not None:
            mp.feed(chunk)
            if mp.error is not None:  # the rest of the body is read and ignored; post() answers 400
                self._body_error = ApiError(400, "invalid_multipart", mp.error)
                self._buffer = bytearray()
                return
            if mp.headers_done and self._fh is None and self._upload_dir is None:
                try:
                    self.filename = self.filename or sanitise_filename(mp.filename)
                except ApiError as exc:
                    self._body_error = exc
                    return
                await self._open_upload(self.filename)
            data = mp.take()
        self.file_bytes += len(data)
        self._buffer.extend(data)
        if len(self._buffer) >= FLUSH_BYTES:
            data, self._buffer = bytes(self._buffer), bytearray()
            await IOLoop.current().run_in_executor(self.services.executor, self._write, data)

    def _write(self, data: bytes) -> None:
        with self._io_lock:
            if self._fh is None:  # cleaned up meanwhile (client gone)
                return
            self._hash.update(data)
            self._fh.write(data)

    def _finish_file(self, data: bytes) -> None:
        self._write(data)
        with self._io_lock:
            if self._fh is None:
                raise ApiError(400, "upload_aborted", "the upload was aborted")
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    async def finish_upload(self) -> Path:
        """Write the last chunk and return the complete file (413 if it was too large)."""
        if self._too_large:
            raise ApiError(413, "payload_too_large",
                           f"upload exceeds the limit of {self.body_limit()} bytes")
        if self._body_error is not None:
            raise self._body_error
        if self._multipart is not None:
            self._multipart.check_complete()
        self.form = dict(self._multipart.fields) if self._multipart is not None else {}
        if self._fh is None or self.upload_path is None:
            raise ApiError(400, "invalid_request", "no upload in progress")
        data, self._buffer = bytes(self._buffer), bytearray()
        await IOLoop.current().run_in_executor(self.services.executor, self._finish_file, data)
        if self.file_bytes == 0:
            raise ApiError(400, "empty_upload", "the uploaded file is empty; send the file's bytes as the body "
                                                "(or one multipart part: curl -F file=@picture.png)")
        self.upload_digest = self._hash.hexdigest()
        return self.upload_path

    async def discard_upload(self) -> None:
        """Remove the temporary folder (awaited, so the answer leaves nothing behind)."""
        if self._fh is not None or self._upload_dir is not None:
            await IOLoop.current().run_in_executor(self.services.executor, self._cleanup)

    def _cleanup(self) -> None:
        with self._io_lock:
            fh, folder = self._fh, self._upload_dir
            self._fh = self._upload_dir = None
        if fh is not None:
            fh.close()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _release(self) -> None:
        if self._slot:
            self._slot = False
            self.services.release_upload_slot()
        if self._fh is not None or self._upload_dir is not None:
            self.services.executor.submit(self._cleanup)

    def on_body_cut(self) -> None:  # 408: the body came too slowly
        self._gone = self._too_large = True
        self._release()

    def on_finish(self) -> None:
        self._release()
        super().on_finish()

    def on_connection_close(self) -> None:  # the client went away
        super().on_connection_close()
        self._gone = self._too_large = True
        self._release()

"""Streamed uploads: the body goes to a temporary file (written off the loop), hashed on the way.

The file lands at ``data/uploads/.<random>/<sanitised name>`` (same file system as the
assets root and the staging folder, so handing it on is a rename), and the folder is
removed when the request ends, whatever happened.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import unicodedata
from pathlib import Path
from typing import Any

from tornado.ioloop import IOLoop

from .base import ApiError, ComfyvnAPIHandler

FLUSH_BYTES = 1024 * 1024
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


def sanitise_filename(raw: str | None) -> str:
    """A safe base name from a client-supplied file name (400 when nothing usable is left)."""
    if not raw:
        raise ApiError(400, "invalid_parameter", "filename is required (?filename=picture.png)")
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name or name in (".", ".."):
        raise ApiError(400, "invalid_parameter", f"filename {raw!r} has no usable characters")
    if name.endswith(".asset.json"):
        raise ApiError(400, "invalid_parameter", "filename may not end with .asset.json (reserved for sidecars)")
    stem, dot, ext = name.rpartition(".")
    if len(name.encode()) > 200:  # keep the extension, trim the stem
        keep = ext if dot and len(ext) <= 16 else ""
        budget = 200 - len(keep.encode()) - 1
        name = (stem or name).encode()[:budget].decode("utf-8", "ignore").rstrip(" .") + (f".{keep}" if keep else "")
    return name


class StreamedUploadMixin(ComfyvnAPIHandler):
    """Base of the upload routes: ``?filename=`` names the file, the raw body is its content."""

    upload_path: Path | None = None
    upload_digest: str = ""
    upload_bytes: int = 0
    _upload_dir: Path | None = None
    _fh: Any = None
    _buffer: bytearray
    _hash: Any = None
    _gone = False

    def body_limit(self) -> int:
        return self.services.max_upload_bytes()

    async def start_body(self) -> None:
        if self.request.method != "POST":
            return
        self.filename = sanitise_filename(self.get_query_argument("filename", None))
        self.validate_upload_params()
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._io_lock = threading.Lock()
        self._upload_dir, self.upload_path, self._fh = await IOLoop.current().run_in_executor(
            self.services.executor, self._open_temp)
        if self._gone:  # the client left while the file was being created
            self.services.executor.submit(self._cleanup)

    def validate_upload_params(self) -> None:
        """Check query parameters before any byte is stored (subclasses override)."""

    def _open_temp(self) -> tuple[Path, Path, Any]:
        self.services.uploads_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.services.uploads_dir))
        path = folder / self.filename
        return folder, path, open(path, "xb")  # noqa: SIM115 - closed in _finish_file/_cleanup

    async def data_received(self, chunk: bytes) -> None:  # type: ignore[override]
        if self._finished or self._fh is None or self._too_large:
            return
        self.upload_bytes += len(chunk)
        if self.upload_bytes > self.body_limit():
            self._too_large = True
            self._buffer = bytearray()
            return
        self._buffer.extend(chunk)
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
        if self._fh is None or self.upload_path is None:
            raise ApiError(400, "invalid_request", "no upload in progress")
        data, self._buffer = bytes(self._buffer), bytearray()
        await IOLoop.current().run_in_executor(self.services.executor, self._finish_file, data)
        if self.upload_bytes == 0:
            raise ApiError(400, "empty_upload", "the request body is empty; send the file's bytes as the body")
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

    def on_finish(self) -> None:
        if self._fh is not None or self._upload_dir is not None:
            self.services.executor.submit(self._cleanup)

    def on_connection_close(self) -> None:  # the client went away mid-upload
        super().on_connection_close()
        self._gone = self._too_large = True
        if self._fh is not None or self._upload_dir is not None:
            self.services.executor.submit(self._cleanup)

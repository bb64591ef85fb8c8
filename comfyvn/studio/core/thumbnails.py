"""Thumbnails (256/512 px PNG for images) and waveform JSON (for WAV), made off the caller's thread.

An image is decoded only when it fits ``registry.thumbnail_max_pixels`` (50 megapixels by
default, well below Pillow's decompression-bomb limit of ~179 megapixels): a 13,300 x 13,300
PNG of a few hundred KB would otherwise take ~2 GiB to decode.  JPEGs are decoded at a reduced
scale (``draft``: 1/2, 1/4 or 1/8, still at least the thumbnail size), so a large photo only
counts by the pixels its reduced decode needs, except a progressive JPEG: libjpeg buffers its
full-resolution coefficients whatever the scale, so it counts by its full size.  Only the formats
the workbench makes thumbnails of are opened (:data:`THUMBNAIL_FORMATS`): an ICO or ICNS file
(which Pillow decodes while opening, embedded PNG and all) is refused unopened, whatever its
name (:class:`UnsupportedImage`).  A refused image gets no thumbnail; the reason is recorded as
the thumbnail's error (:class:`ImageTooLarge`, :class:`UnsupportedImage`).
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import wave
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ...config import ConfigError, get_setting
from ...errors import InvalidInput
from ...fsutil import atomic_write_bytes
from ...kinds import IMAGE_SUFFIXES as IMAGE_SUFFIXES  # re-exported: what thumbnails are made of
from ...kinds import WAVEFORM_SUFFIXES

log = logging.getLogger("comfyvn.studio.core.thumbnails")

WAVEFORM = "waveform"
WAVEFORM_BUCKETS = 512
#: the most sample bytes one waveform reads; a longer file is sampled by one window per bucket
WAVEFORM_MAX_READ_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_PIXELS = 50_000_000
#: the Pillow formats the suffixes in IMAGE_SUFFIXES stand for; no other decoder is ever tried
THUMBNAIL_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


class ImageTooLarge(InvalidInput, ValueError):
    """An image would need more pixels decoded than a thumbnail job may spend."""


class UnsupportedImage(InvalidInput, ValueError):
    """A file that is none of :data:`THUMBNAIL_FORMATS` (e.g. an ICO under a .png name)."""


def max_pixels_setting(ws=None) -> int:
    """``registry.thumbnail_max_pixels`` of ``ws`` (the current workspace by default)."""
    try:
        value = get_setting("registry.thumbnail_max_pixels", DEFAULT_MAX_PIXELS, ws)
    except ConfigError:  # a broken config file is reported by the routes; keep the safe default here
        return DEFAULT_MAX_PIXELS
    return int(value) if isinstance(value, int | float) and value > 0 else DEFAULT_MAX_PIXELS


def preview_kind(path: str) -> str | None:
    """``"image"`` (a thumbnail), ``"audio"`` (a waveform: WAV only) or None (no preview)."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in WAVEFORM_SUFFIXES:
        return "audio"
    return None


def render_image_thumbnail(src: Path, size: int, *, max_pixels: int | None = None) -> bytes:
    """A PNG thumbnail at most ``size`` px on its longer side; :class:`ImageTooLarge` (before any
    pixel is decoded) when the decode would exceed ``max_pixels`` (default: the setting)."""
    limit = max_pixels_setting() if max_pixels is None else int(max_pixels)
    try:
        opened = Image.open(src, formats=THUMBNAIL_FORMATS)
    except UnidentifiedImageError:
        raise UnsupportedImage(f"not a {', '.join(THUMBNAIL_FORMATS)} image (ICO, ICNS and other formats "
                               "get no thumbnail): no thumbnail made") from None
    with opened as im:
        width, height = im.size
        progressive = im.format == "JPEG" and bool(im.info.get("progressive") or im.info.get("progression"))
        im.draft(None, (size * 2, size * 2))  # JPEG: decode at 1/2..1/8 scale (as Image.thumbnail would)
        # a progressive JPEG holds full-resolution coefficients in memory even for a reduced decode
        decoded = width * height if progressive else im.size[0] * im.size[1]
        if decoded > limit:
            raise ImageTooLarge(
                f"image is {width} x {height} = {width * height / 1e6:.1f} megapixels"
                f"{' (a progressive JPEG decodes at full size)' if progressive else ''}; thumbnails decode at most "
                f"{limit / 1e6:g} megapixels (registry.thumbnail_max_pixels): no thumbnail made")
        thumb: Image.Image = ImageOps.exif_transpose(im)
        thumb.thumbnail((size, size), Image.Resampling.LANCZOS)
        if thumb.mode not in ("RGB", "RGBA"):
            thumb = thumb.convert("RGBA")
        out = io.BytesIO()
        thumb.save(out, format="PNG", optimize=False)
        return out.getvalue()


def render_waveform(src: Path, buckets: int = WAVEFORM_BUCKETS, *, max_read_bytes: int = WAVEFORM_MAX_READ_BYTES) -> bytes:
    """Peak amplitudes (0..1) in ``buckets`` slices of a PCM WAV file.

    At most ``max_read_bytes`` of samples are read: each slice contributes a window from its start
    of at most ``max_read_bytes // buckets`` bytes (the whole slice for files under the cap), and
    the peak of a window is computed vectorised, so a 150 MB file costs what an 8 MiB one does.
    """
    import numpy as np

    with wave.open(str(src), "rb") as wav:
        channels, width, rate, frames = wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()
        if width not in (1, 2, 4):
            raise ValueError(f"unsupported WAV sample width {width} bytes")
        dtype = np.dtype({1: "u1", 2: "<i2", 4: "<i4"}[width])  # 8-bit WAV is unsigned
        frame_bytes = width * channels
        per_bucket = max(1, frames // buckets)
        window = max(1, min(per_bucket, max_read_bytes // max(1, buckets * frame_bytes)))
        full_scale = float(2 ** (8 * width - 1))
        peaks: list[float] = []
        for start in range(0, frames, per_bucket):
            if len(peaks) >= buckets:
                break
            wav.setpos(start)
            raw = wav.readframes(window)
            if not raw:
                break
            samples = np.frombuffer(raw[: len(raw) - len(raw) % width], dtype=dtype).astype(np.int64)
            if width == 1:  # 8-bit WAV is unsigned
                samples -= 128
            peak = int(np.abs(samples).max()) if samples.size else 0
            peaks.append(round(min(peak / full_scale, 1.0), 4))
    payload = {"sample_rate": rate, "channels": channels, "frames": frames,
               "duration_s": round(frames / rate, 3) if rate else 0, "peaks": peaks}
    return json.dumps(payload).encode()


class Thumbnailer:
    """A small worker pool; :meth:`submit` returns a future, :meth:`wait` drains pending work."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="comfyvn-thumbs")
        self._pending: set[Future] = set()
        self._lock = threading.Lock()

    def submit(self, fn, *args) -> Future:
        fut = self._pool.submit(fn, *args)
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, fut: Future) -> None:
        with self._lock:
            self._pending.discard(fut)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no thumbnail is pending; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                futs = list(self._pending)
            if not futs:
                return True
            for fut in futs:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    fut.result(timeout=remaining)
                except TimeoutError:
                    return False
                except Exception:  # recorded by the job itself
                    pass
            if deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    return not self._pending


def write_preview(src: Path, dest: Path, size: str, *, max_pixels: int | None = None) -> None:
    """Render and write one preview atomically (no fsync: a lost preview is simply made again)."""
    if size == WAVEFORM:
        data = render_waveform(src)
    elif max_pixels is None:
        data = render_image_thumbnail(src, int(size))  # the workspace setting
    else:
        data = render_image_thumbnail(src, int(size), max_pixels=max_pixels)
    atomic_write_bytes(dest, data, fsync=False)


_thumbnailer: Thumbnailer | None = None
_thumbnailer_lock = threading.Lock()


def get_thumbnailer() -> Thumbnailer:
    global _thumbnailer
    with _thumbnailer_lock:
        if _thumbnailer is None:
            _thumbnailer = Thumbnailer()
        return _thumbnailer

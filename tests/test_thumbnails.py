"""Thumbnail rendering (images), waveforms (WAV) and the worker pool."""

from __future__ import annotations

import io
import json
import struct
import threading
import wave
from pathlib import Path

import pytest
from PIL import Image

from comfyvn.studio.core.thumbnails import (
    WAVEFORM,
    Thumbnailer,
    preview_kind,
    render_image_thumbnail,
    render_waveform,
    write_preview,
)


def _wav(path: Path, samples: list[int], *, width: int = 2, channels: int = 1, rate: int = 1000) -> Path:
    fmt = {1: "B", 2: "h", 4: "i"}[width]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}{fmt}", *samples))
    return path


def test_preview_kind_by_suffix():
    assert preview_kind("a/b/Hero.PNG") == "image"
    assert preview_kind("x.webp") == "image"
    assert preview_kind("voice.wav") == "audio"
    assert preview_kind("model.safetensors") is None


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "CMYK"])
def test_image_thumbnails_keep_the_aspect_ratio_and_are_png(tmp_path, mode):
    src = tmp_path / f"in_{mode}.png" if mode != "CMYK" else tmp_path / "in.jpg"
    Image.new(mode, (1000, 250)).save(src)
    for size in (256, 512):
        with Image.open(io.BytesIO(render_image_thumbnail(src, size))) as im:
            assert im.format == "PNG" and im.size == (size, size // 4)
            assert im.mode in ("RGB", "RGBA")


def test_small_images_are_not_enlarged(tmp_path):
    src = tmp_path / "tiny.png"
    Image.new("RGB", (40, 30)).save(src)
    with Image.open(io.BytesIO(render_image_thumbnail(src, 256))) as im:
        assert im.size == (40, 30)


def test_exif_orientation_is_applied(tmp_path):
    src = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    Image.new("RGB", (400, 100)).save(src, exif=exif)
    with Image.open(io.BytesIO(render_image_thumbnail(src, 256))) as im:
        assert im.size[1] > im.size[0]


def test_waveform_peaks_for_16_bit_8_bit_and_stereo(tmp_path):
    data = json.loads(render_waveform(_wav(tmp_path / "a.wav", [0, 16384, -32768, 0] * 250), buckets=10))
    assert data["sample_rate"] == 1000 and data["frames"] == 1000 and data["duration_s"] == 1.0
    assert len(data["peaks"]) == 10 and all(p == 1.0 for p in data["peaks"])
    quiet = json.loads(render_waveform(_wav(tmp_path / "b.wav", [128] * 100, width=1), buckets=5))
    assert quiet["peaks"] == [0.0] * 5  # 8-bit WAV is unsigned: 128 is silence
    stereo = json.loads(render_waveform(_wav(tmp_path / "c.wav", [0, 8192] * 100, channels=2), buckets=4))
    assert stereo["channels"] == 2 and stereo["peaks"] == [0.25] * 4


def test_broken_inputs_raise(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(Exception):  # noqa: B017  (Pillow's UnidentifiedImageError)
        render_image_thumbnail(bad, 256)
    notwav = tmp_path / "bad.wav"
    notwav.write_bytes(b"RIFF....nope")
    with pytest.raises((wave.Error, EOFError)):
        render_waveform(notwav)
    out = tmp_path / "thumbs" / "x.png"
    with pytest.raises(Exception):  # noqa: B017
        write_preview(bad, out, "256")
    assert not out.exists()
    assert not list(out.parent.glob(".*.tmp"))  # no half-written file either


def test_write_preview_writes_atomically(tmp_path):
    wav = _wav(tmp_path / "v.wav", [1000, -1000] * 50)
    dest = tmp_path / "cache" / "ab" / "uid_waveform.json"
    write_preview(wav, dest, WAVEFORM)
    assert json.loads(dest.read_text())["frames"] == 100
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_thumbnailer_wait_reports_pending_work():
    pool = Thumbnailer(workers=1)
    gate = threading.Event()
    pool.submit(gate.wait, 30)
    assert pool.pending() == 1
    assert pool.wait(timeout=0.05) is False
    gate.set()
    assert pool.wait(timeout=30) is True and pool.pending() == 0
    pool.submit(lambda: 1 / 0)  # a failing job counts as done
    assert pool.wait(timeout=30) is True


# ------------------------------------------------------------------------------- decompression bombs
def _solid_png(path: Path, width: int, height: int) -> Path:
    """A grey PNG written row by row (a few hundred KB on disk, never held in memory whole)."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        parts = [comp.compress(row * 64) for _ in range(height // 64)]
        parts.append(comp.compress(row * (height % 64)))
        fh.write(chunk(b"IDAT", b"".join(parts) + comp.flush()) + chunk(b"IEND", b""))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_177_megapixel_png_is_refused_before_decoding(tmp_path):
    """13,300 x 13,300 (176.9 MP, under Pillow's bomb limit) in a small file: no 2 GiB decode, a clear note."""
    from comfyvn.studio.core.thumbnails import DEFAULT_MAX_PIXELS, ImageTooLarge

    src = _solid_png(tmp_path / "bomb.png", 13_300, 13_300)
    assert src.stat().st_size < 2_000_000
    with Image.open(src) as im:
        assert im.size == (13_300, 13_300) and 13_300 ** 2 < Image.MAX_IMAGE_PIXELS * 2
    with pytest.raises(ImageTooLarge, match=r"176\.9 megapixels.*registry.thumbnail_max_pixels"):
        render_image_thumbnail(src, 256)
    dest = tmp_path / "thumb.png"
    with pytest.raises(ImageTooLarge):
        write_preview(src, dest, "256")
    assert not dest.exists() and DEFAULT_MAX_PIXELS == 50_000_000


def test_the_pixel_cap_comes_from_the_setting_and_jpegs_count_by_their_reduced_decode(tmp_path, ws):
    from comfyvn.config import update_config
    from comfyvn.studio.core.thumbnails import ImageTooLarge

    png, jpg = tmp_path / "big.png", tmp_path / "big.jpg"
    Image.new("RGB", (1024, 1024), (200, 30, 30)).save(png)
    Image.new("RGB", (1024, 1024), (200, 30, 30)).save(jpg)
    update_config({"registry": {"thumbnail_max_pixels": 300_000}}, ws)
    with pytest.raises(ImageTooLarge, match="1.0 megapixels"):
        render_image_thumbnail(png, 64)
    # a JPEG decodes at 1/8 scale here (128 x 128): well inside the cap, so it gets its thumbnail
    with Image.open(io.BytesIO(render_image_thumbnail(jpg, 64))) as im:
        assert im.size == (64, 64)
    update_config({"registry": {"thumbnail_max_pixels": 2_000_000}}, ws)
    with Image.open(io.BytesIO(render_image_thumbnail(png, 64))) as im:
        assert im.size == (64, 64)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_registered_bomb_gets_no_thumbnail_and_a_clear_note(tmp_path, ws):
    from comfyvn.studio.core.asset_registry import AssetRegistry

    reg = AssetRegistry("default", ws=ws)
    rec = reg.register_file(_solid_png(tmp_path / "poster.png", 13_300, 13_300), asset_type="images")
    assert reg.wait_for_thumbnails(60)
    status = reg.thumbnail_status(rec["uid"])
    assert status and all(s["status"] == "failed" and "176.9 megapixels" in s["error"] for s in status.values())
    assert reg.resolve_thumbnail_path(rec["uid"], 256) is None


def _record_decodes(monkeypatch) -> list[str]:
    """Make every pixel decode fail loudly and record it (a refused file must never be decoded)."""
    from PIL import ImageFile

    calls: list[str] = []

    def refuse(self, *args, **kwargs):
        calls.append(type(self).__name__)
        raise AssertionError(f"{type(self).__name__} was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    return calls


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
def test_a_progressive_jpeg_counts_by_its_full_size(tmp_path, mode, monkeypatch):
    """libjpeg keeps a progressive file's full-resolution coefficients even for a 1/8 decode
    (13,300 x 13,300 took 1.5-3.4 GB): the reduced-decode discount applies to baseline JPEGs only."""
    from comfyvn.studio.core.thumbnails import ImageTooLarge

    progressive, baseline = tmp_path / "prog.jpg", tmp_path / "base.jpg"
    Image.new(mode, (2048, 2048), "white" if mode == "RGB" else (0, 0, 0, 0)).save(progressive, progressive=True)
    Image.new(mode, (2048, 2048), "white" if mode == "RGB" else (0, 0, 0, 0)).save(baseline)
    with Image.open(io.BytesIO(render_image_thumbnail(baseline, 64, max_pixels=1_000_000))) as im:
        assert im.size == (64, 64)  # 1/8 decode: 256 x 256, inside the cap
    calls = _record_decodes(monkeypatch)
    with pytest.raises(ImageTooLarge, match=r"4\.2 megapixels \(a progressive JPEG decodes at full size\)"):
        render_image_thumbnail(progressive, 64, max_pixels=1_000_000)
    assert calls == []


def _ico_around(png: bytes) -> bytes:
    """A one-image ICO file holding ``png`` (width/height 0 in the directory = 256 or more)."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def _icns_around(png: bytes) -> bytes:
    """An ICNS file whose one 1024 px entry (``ic10``) holds ``png``."""
    entry = b"ic10" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


@pytest.mark.parametrize("container", ["ico", "icns"])
@pytest.mark.parametrize("name", ["icon.png", "icon.{container}"])
def test_ico_and_icns_are_refused_unopened_whatever_their_name(tmp_path, monkeypatch, container, name):
    """Pillow decodes an ICO's embedded PNG while opening it: only thumbnail formats are ever opened."""
    from comfyvn.studio.core.thumbnails import UnsupportedImage

    png = _solid_png(tmp_path / "inner.png", 13_300, 13_300).read_bytes()
    src = tmp_path / name.format(container=container)
    src.write_bytes(_ico_around(png) if container == "ico" else _icns_around(png))
    calls = _record_decodes(monkeypatch)
    with pytest.raises(UnsupportedImage, match="ICO, ICNS and other formats get no thumbnail"):
        render_image_thumbnail(src, 256)
    dest = tmp_path / "thumb.png"
    with pytest.raises(UnsupportedImage):
        write_preview(src, dest, "256")
    assert calls == [] and not dest.exists()


def test_a_large_wav_waveform_reads_at_most_the_cap(tmp_path, monkeypatch):
    """A 150 MB WAV tied a worker for tens of seconds (a Python loop per sample): a waveform now
    reads at most WAVEFORM_MAX_READ_BYTES, one window per bucket, whatever the file's length."""
    from comfyvn.studio.core.thumbnails import WAVEFORM_MAX_READ_BYTES

    data_bytes = 50 * 1024 * 1024  # 16-bit mono: 26,214,400 frames, zeros (a sparse file)
    src = tmp_path / "long.wav"
    fmt = struct.pack("<HHIIHH", 1, 1, 44_100, 44_100 * 2, 2, 16)
    header = (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
              + b"data" + struct.pack("<I", data_bytes))
    with open(src, "wb") as fh:
        fh.write(header)
        fh.seek(len(header) + 2 * (data_bytes // 2 // 512) * 7)  # the first frame of bucket 7: full scale
        fh.write(struct.pack("<h", -32768))
        fh.truncate(len(header) + data_bytes)
    read: list[int] = []
    original = wave.Wave_read.readframes

    def counting(self, n):
        chunk = original(self, n)
        read.append(len(chunk))
        return chunk

    monkeypatch.setattr(wave.Wave_read, "readframes", counting)
    data = json.loads(render_waveform(src))
    assert data["frames"] == data_bytes // 2 and len(data["peaks"]) == 512
    assert 0 < sum(read) <= WAVEFORM_MAX_READ_BYTES < data_bytes
    assert data["peaks"][7] == 1.0 and data["peaks"].count(0.0) == 511
    # under the cap every byte still counts: the same peaks as before for a short file
    read.clear()
    short = json.loads(render_waveform(_wav(tmp_path / "s.wav", [0, 0, 0, 16384] * 250), buckets=10))
    assert short["peaks"] == [0.5] * 10 and sum(read) == 2000

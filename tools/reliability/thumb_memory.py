"""Peak memory of thumbnailing a 176.9-megapixel PNG (13,300 x 13,300, a few hundred KB on disk).

Each case runs in a fresh Python process and reports that process's peak RSS (``ru_maxrss``)::

    python tools/reliability/thumb_memory.py            # this checkout
    python tools/reliability/thumb_memory.py --repo /path/to/other/checkout   # e.g. main, for "before"
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import resource, sys, time, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("ignore")
from comfyvn.studio.core import thumbnails
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.monotonic()
try:
    thumbnails.render_image_thumbnail(sys.argv[2], 256)
    outcome = "thumbnail made"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {exc}"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{base / 1024:.0f}\t{peak / 1024:.0f}\t{time.monotonic() - t0:.2f}\t{outcome}")
"""


def solid_png(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x80\x40\x20" * width  # RGB rows
    parts = [comp.compress(row * 16) for _ in range(height // 16)] + [comp.compress(row * (height % 16))]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", b"".join(parts) + comp.flush()) + chunk(b"IEND", b""))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout whose comfyvn to measure")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src = solid_png(Path(tmp) / "bomb.png", 13_300, 13_300)
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.repo.resolve()), str(src)],
                             capture_output=True, text=True, check=True).stdout.strip()
        base, peak, seconds, outcome = out.split("\t", 3)
        print(json.dumps({"repo": str(args.repo), "png_bytes": src.stat().st_size, "megapixels": 176.9,
                          "rss_before_mib": int(base), "peak_rss_mib": int(peak), "seconds": float(seconds),
                          "outcome": outcome}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

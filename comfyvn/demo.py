"""A demo workspace that tells a small, true story (``comfyvn-demo``, in :mod:`comfyvn.launcher`, runs it).

    comfyvn-demo seed --workspace demo-workspace   # idempotent
    comfyvn-demo lab  --workspace demo-workspace   # = comfyvn-workbench demo (seed, then JupyterLab)

The story, all of it generated deterministically (Pillow pictures, ``wave`` sounds):

* 16 pictures and 3 sounds, each distinct: backgrounds of a school story, three characters
  (Aoi, Ren, Mika) with one face per expression, props and UI parts, a chime, a door knock and
  a four-note theme;
* the theme came in a music pack with its ``LICENSE.txt`` (CC-BY-4.0) but was registered
  without a licence, and the letter prop's sidecar went missing: the sidecar enforcer reports
  both, and ``comfyvn-enforcer --fill-metadata`` (or ``tools/assets_enforcer.py``) repairs both (a clean report after);
* two new backgrounds were dropped into ``incoming/`` and are really in the ingest queue,
  staged and waiting for someone to apply them in the queue inspector;
* the studio's ComfyUI ``comfyui-models/`` folder (a checkpoint and a LoRA, tiny but valid
  ``.safetensors``) is a library root, registered in place by a scan; a forgotten copy of the LoRA
  under ``loras/old/`` shows in the Library tab's duplicate report.
"""

from __future__ import annotations

import math
import struct
import tempfile
import wave
from pathlib import Path

from .config import init_workspace, set_feature, update_config, workspace
from .hashing import sha256_file
from .library.scan import scan_library
from .workbench import Workbench

# (type, name, colours, tags, licence)
_IMAGES = [
    ("backgrounds", "classroom_dusk", ("#f6a860", "#5b3f8c"), "school, dusk, interior", "cc0"),
    ("backgrounds", "rooftop_noon", ("#9ad0f5", "#f4f1de"), "school, day, exterior", "cc0"),
    ("backgrounds", "station_night", ("#0b1d3a", "#3c6e9f"), "city, night, exterior", "cc-by-4.0"),
    ("backgrounds", "shrine_spring", ("#f7cad0", "#8fb996"), "shrine, spring, exterior", "cc-by-4.0"),
    ("backgrounds", "library_rain", ("#4a5759", "#b0c4b1"), "school, rain, interior", "cc-by-sa-4.0"),
    ("backgrounds", "beach_sunset", ("#ff7b54", "#ffd56b"), "beach, dusk, exterior", "cc0"),
    ("characters", "aoi_neutral", ("#2a9d8f", "#e9c46a"), "aoi, neutral, sprite", "cc-by-4.0"),
    ("characters", "aoi_smile", ("#2a9d8f", "#f4a261"), "aoi, smile, sprite", "cc-by-4.0"),
    ("characters", "ren_neutral", ("#264653", "#e76f51"), "ren, neutral, sprite", "cc-by-4.0"),
    ("characters", "ren_angry", ("#264653", "#d62828"), "ren, angry, sprite", "cc-by-4.0"),
    ("characters", "mika_surprised", ("#8338ec", "#ffbe0b"), "mika, surprised, sprite", "cc-by-4.0"),
    ("props", "umbrella", ("#3a86ff", "#ffffff"), "rain, item", "cc0"),
    ("props", "letter", ("#fefae0", "#bc6c25"), "item, story", "cc0"),
    ("props", "lantern", ("#ffb703", "#023047"), "night, item", "cc0"),
    ("ui", "textbox_frame", ("#22223b", "#c9ada7"), "ui, frame", "cc0"),
    ("ui", "choice_button", ("#4a4e69", "#f2e9e4"), "ui, button", "cc0"),
]
# (type, name, notes as (Hz, start s, length s), tags, licence); theme_intro's licence is in its folder
_SOUNDS = [
    ("audio", "chime", [(1318.5, 0.0, 0.9), (1760.0, 0.12, 0.9)], "sfx, ui", "cc0"),
    ("audio", "door_knock", [(110.0, 0.0, 0.12), (110.0, 0.22, 0.12), (98.0, 0.44, 0.18)], "sfx, door", "cc-by-4.0"),
    ("audio", "theme_intro", [(261.6, 0.0, 0.5), (329.6, 0.45, 0.5), (392.0, 0.9, 0.5), (523.3, 1.35, 0.9)],
     "bgm, theme", None),
]
MUSIC_FOLDER = "audio/music"  # where the music pack, with its LICENSE.txt, lives in the assets tree
MUSIC_LICENSE = "Demo music pack: theme_intro.wav\nSPDX-License-Identifier: CC-BY-4.0\n"
LOST_SIDECAR = "letter"  # the prop whose sidecar went missing
INCOMING = [("cafe_morning", ("#ffe8d6", "#cb997e")), ("park_autumn", ("#dda15e", "#606c38"))]
# a ComfyUI models folder the studio already had: registered in place by a library scan, never
# copied or moved. (folder, file, title, licence, seed)
MODELS_FOLDER = "comfyui-models"
_MODELS = [
    ("checkpoints", "school_days_v2.safetensors", "School Days v2", "creativeml-openrail-m", 1),
    ("loras", "ink_style.safetensors", "Ink Style", "cc-by-4.0", 2),
]
DUPLICATE_MODEL = ("loras/old/ink_style_v1.safetensors", "loras/ink_style.safetensors")  # a forgotten copy
# what each character's face shows
_EXPRESSIONS = {"neutral": "line", "smile": "smile", "angry": "frown", "surprised": "o"}


def title(name: str) -> str:
    """The title the demo gives an asset (``classroom_dusk`` -> ``Classroom Dusk``)."""
    return name.replace("_", " ").title()


def titles() -> list[str]:
    """Every asset title the demo registers (what the gallery shows)."""
    return [title(item[1]) for item in [*_IMAGES, *_SOUNDS]] + [item[2] for item in _MODELS]


def make_safetensors(path: Path, seed: int) -> Path:
    """A tiny, valid ``.safetensors`` file (one float32 tensor; distinct bytes per ``seed``)."""
    header = (f'{{"__metadata__": {{"format": "pt", "comfyvn_demo": "{seed}"}}, '
              '"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}').encode()
    header += b" " * (-len(header) % 8)  # the format aligns the data on 8 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<4f", seed, seed / 2, seed / 3, seed / 4))
    return path


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def _face(draw, w: int, h: int, expression: str) -> None:
    """Eyes, brows and a mouth that differ per expression."""
    ink = (30, 30, 30)
    eye_y = h * 0.2
    if expression == "o":  # surprised: round eyes, open mouth
        for x in (0.4, 0.55):
            draw.ellipse([w * x, eye_y - h * 0.01, w * (x + 0.06), eye_y + h * 0.04], outline=ink, width=4)
        draw.ellipse([w * 0.46, h * 0.28, w * 0.54, h * 0.33], fill=ink)
        return
    for x in (0.4, 0.55):
        draw.ellipse([w * x, eye_y, w * (x + 0.05), eye_y + h * 0.04], fill=ink)
    if expression == "frown":
        draw.line([(w * 0.38, h * 0.17), (w * 0.46, h * 0.19)], fill=ink, width=5)
        draw.line([(w * 0.54, h * 0.19), (w * 0.62, h * 0.17)], fill=ink, width=5)
        draw.arc([w * 0.42, h * 0.29, w * 0.58, h * 0.35], 200, 340, fill=ink, width=5)
    elif expression == "smile":
        draw.arc([w * 0.4, h * 0.24, w * 0.6, h * 0.32], 20, 160, fill=ink, width=5)
    else:
        draw.line([(w * 0.44, h * 0.3), (w * 0.56, h * 0.3)], fill=ink, width=5)


def make_image(path: Path, kind: str, colours: tuple[str, str], seed: int, name: str = "") -> None:
    """A small, recognisable picture: a gradient with a shape per asset type (a face per expression)."""
    from PIL import Image, ImageDraw

    w, h = (960, 540) if kind == "backgrounds" else (400, 600) if kind == "characters" else (320, 320)
    top, bottom = _hex(colours[0]), _hex(colours[1])
    im = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(im)
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    accent = tuple(255 - c for c in bottom)
    if kind == "backgrounds":
        for i in range(3 + seed % 4):
            x = (seed * 97 + i * 193) % w
            height = 0.35 + 0.1 * ((seed + i) % 4)
            draw.rectangle([x, h * (1 - height), x + w * 0.1, h], fill=tuple(max(0, c - 40) for c in bottom))
        sun = 0.1 + 0.08 * (seed % 5)
        draw.ellipse([w * 0.7, h * sun, w * 0.82, h * (sun + 0.21)], fill=(255, 244, 214))
    elif kind == "characters":
        hair = top
        draw.ellipse([w * 0.27, h * 0.04, w * 0.73, h * 0.3], fill=hair)  # hair behind the face
        draw.ellipse([w * 0.3, h * 0.08, w * 0.7, h * 0.36], fill=(250, 224, 200))
        draw.rounded_rectangle([w * 0.2, h * 0.38, w * 0.8, h * 0.98], radius=40, fill=top)
        draw.polygon([(w * 0.42, h * 0.38), (w * 0.5, h * 0.48), (w * 0.58, h * 0.38)], fill=bottom)  # collar
        _face(draw, w, h, _EXPRESSIONS.get(name.rsplit("_", 1)[-1], "line"))
    else:
        draw.rounded_rectangle([w * 0.15, h * 0.15, w * 0.85, h * 0.85], radius=24, outline=accent, width=10)
        draw.regular_polygon((w / 2, h / 2, w * 0.18), 3 + seed % 5, fill=accent)
    im.save(path, format="PNG")


def make_sound(path: Path, notes: list[tuple[float, float, float]], rate: int = 22050) -> None:
    """A mono 16-bit WAV of decaying sine notes ``(Hz, start s, length s)`` (deterministic)."""
    seconds = max(start + length for _f, start, length in notes)
    samples = [0.0] * int(seconds * rate)
    for freq, start, length in notes:
        first, count = int(start * rate), int(length * rate)
        for i in range(count):
            env = math.exp(-5 * i / count)
            samples[first + i] += env * math.sin(2 * math.pi * freq * i / rate)
    peak = max(1.0, max(abs(v) for v in samples))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(b"".join(struct.pack("<h", int(20000 * v / peak)) for v in samples))


def seed(root: Path, *, quiet: bool = False) -> dict:
    """Create the demo workspace (once): the story of the module docstring.

    Returns ``{"workspace", "registered", "staged", "findings"}`` (0 and empty lists when the
    workspace was seeded before; nothing is changed then).
    """
    ws = init_workspace(workspace(root))
    marker = ws.data_dir / ".demo_seeded"
    if marker.exists():
        if not quiet:
            print(f"demo workspace already seeded: {ws.root}")
        return {"workspace": str(ws.root), "registered": 0, "staged": [], "findings": []}
    set_feature("enable_asset_ingest", True, ws)
    with Workbench(ws) as wb:  # closed (bus tailer, worker, connections) once the demo is seeded
        registry = wb.registry("default")
        models = _seed_library(ws, registry)  # first: the gallery shows the newest (the art) first
        records: dict[str, dict] = {}
        licence: str | None  # the images all have one, a sound may not
        with tempfile.TemporaryDirectory(prefix="comfyvn-demo-") as tmp:
            for i, (kind, name, colours, tags, licence) in enumerate(_IMAGES):
                src = Path(tmp) / f"{name}.png"
                make_image(src, kind, colours, i, name)
                records[name] = registry.register_file(src, kind, tags=tags, license_tag=licence,
                                                       metadata={"title": title(name), "demo": True})
            for kind, name, notes, tags, licence in _SOUNDS:
                src = Path(tmp) / f"{name}.wav"
                make_sound(src, notes)
                folder = MUSIC_FOLDER + "/" if licence is None else None
                records[name] = registry.register_file(src, kind, tags=tags, license_tag=licence, dest_relative=folder,
                                                       metadata={"title": title(name), "demo": True})
        (registry.assets_root / MUSIC_FOLDER / "LICENSE.txt").write_text(MUSIC_LICENSE, encoding="utf-8")
        registry.wait_for_thumbnails(60)
        registry.sidecar_path_for(records[LOST_SIDECAR]["path"]).unlink()
        incoming = ws.root / "incoming"
        incoming.mkdir(exist_ok=True)
        queue = wb.queue()
        staged = []
        for i, (name, colours) in enumerate(INCOMING):
            make_image(incoming / f"{name}.png", "backgrounds", colours, 40 + i)
            job = queue.enqueue("local", source_path=incoming / f"{name}.png", asset_type_hint="backgrounds",
                                metadata={"title": title(name), "demo": True})
            staged.append(job["job_id"])
        marker.write_text("seeded\n")
    findings = ["theme_intro: no licence (its folder has LICENSE.txt)",
                f"{LOST_SIDECAR}: sidecar missing"]
    if not quiet:
        print(f"seeded demo workspace {ws.root}: {len(records)} assets, {models} models of "
              f"{MODELS_FOLDER}/ registered in place (a library root), {len(staged)} files from incoming/ "
              "staged in the ingest queue (apply them in the queue inspector), 2 findings for the sidecar "
              f"enforcer (comfyvn-enforcer --fill-metadata --workspace {ws.root} repairs them)")
    return {"workspace": str(ws.root), "registered": len(records) + models, "staged": staged, "findings": findings}


def _seed_library(ws, registry) -> int:
    """The models folder as a library root, scanned (the copy is reported as a duplicate); returns
    how many assets the scan registered."""
    folder = ws.root / MODELS_FOLDER
    for sub, name, _title, _licence, seed in _MODELS:
        make_safetensors(folder / sub / name, seed)
    copy, original = DUPLICATE_MODEL
    (folder / copy).parent.mkdir(parents=True, exist_ok=True)
    (folder / copy).write_bytes((folder / original).read_bytes())
    update_config({"library": {"roots": [{"name": "comfyui", "path": str(folder), "layout": "comfyui",
                                          "sidecars": "mirror"}]}}, ws)
    report = scan_library(project="default", ws=ws, registry=registry)
    named = {sha256_file(folder / sub / name)[0]: (title_, licence) for sub, name, title_, licence, _seed in _MODELS}
    for uid in report.registered:  # by content: the scan may have met the copy first
        title_, licence = named[registry.get_asset(uid)["hash"]]
        registry.update_asset_meta(uid, {"title": title_, "demo": True}, license_tag=licence)
    return len(report.registered)

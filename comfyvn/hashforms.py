"""Every hash the model ecosystem shows, computed in one read pass over a file.

=============  ================================================================  ===============
form           what it is                                                        length (hex)
=============  ================================================================  ===============
sha256         SHA-256 of the whole file (Civitai ``SHA256``, Hugging Face LFS)  64
blake3         BLAKE3 of the whole file (InvokeAI's model id ``blake3:<hex>``)   64
crc32          CRC-32 (zlib polynomial) of the whole file (Civitai ``CRC32``)    8
autov1         A1111's legacy model hash: SHA-256 of the 64 KiB at offset 1 MiB  8
autov2         first 10 hex of ``sha256`` (A1111 ``Model hash``, Civitai)        10
autov3         ``.safetensors`` only: SHA-256 of the bytes after the header      64
autov3_short   first 12 hex of ``autov3`` (Civitai ``AutoV3``, A1111 LoRA hash)  12
sha256_short   first 12 hex of ``sha256`` (A1111 LoRA hash of other formats)     12
=============  ================================================================  ===============

Sources of the rules (checked against their code):

* AutoV1: stable-diffusion-webui ``modules/sd_models.py`` ``model_hash``: ``seek(0x100000)``,
  ``sha256(read(0x10000))``, first 8 hex.  A file shorter than that hashes the bytes that are
  there, so a file of 1 MiB or less has the AutoV1 of no bytes (``e3b0c442``).
* AutoV3: kohya-ss/sd-scripts ``library/train_util.py`` ``addnet_hash_safetensors`` (copied into
  A1111's ``modules/hashes.py`` and used for LoRAs with ``use_addnet_hash``): read the 8-byte
  little-endian header length ``n``, then SHA-256 of everything from offset ``8 + n`` to the end.
  A1111 shows ``hash[0:12]`` (``extensions-builtin/Lora/network.py`` ``set_hash``) and Civitai
  lists ``AutoV3`` with those 12 hex digits.

One pass: the file is read once, in 8 MiB chunks into reused buffers (``preadv``, no copy);
big files fan every chunk out to one thread per digest (hashlib, blake3 and zlib release the
GIL on big buffers), so SHA-256, AutoV3 and BLAKE3 + CRC32 run side by side on separate cores.
:func:`autov3_fd` computes AutoV3 alone, for callers that leave it out of the one pass
(``hash_fd(fd, safetensors=False)``) and compute it later: the library scan's background phase.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import NamedTuple

from blake3 import blake3
from zlib_ng.zlib_ng import crc32 as _crc32  # zlib's polynomial, ~4x faster than the system zlib here

CHUNK = 8 * 1024 * 1024
THREADED_FROM = 2 * CHUNK  # smaller files are hashed in the calling thread (no thread start-up)
_BUFFERS = 4  # chunks in flight for threaded hashing

AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000
SAFETENSORS_SUFFIXES = (".safetensors",)

# form -> length in hex digits of the value a user may paste
FORM_LENGTHS: dict[str, int] = {
    "sha256": 64, "blake3": 64, "autov3": 64,
    "autov3_short": 12, "sha256_short": 12,
    "autov2": 10,
    "autov1": 8, "crc32": 8,
}
# a tag written before the hex names the form: InvokeAI ``blake3:<hex>``, ``sha256:<hex>``
_TAGGED = {"blake3": ("blake3",), "sha256": ("sha256",)}
_HEX = re.compile(r"[0-9a-f]+")


def autov3_aliases(autov3: str) -> dict[str, str]:
    """The forms a tool shows of an AutoV3: in full, and Civitai's / A1111's first 12 hex."""
    return {"autov3": autov3, "autov3_short": autov3[:12]}


@dataclass(frozen=True, slots=True)
class HashForms:
    """The hashes of one file's bytes (lower-case hex; ``autov3`` is None unless a safetensors file)."""

    size: int
    sha256: str
    blake3: str
    crc32: str
    autov1: str
    autov3: str | None = None

    @property
    def autov2(self) -> str:
        return self.sha256[:10]

    def aliases(self) -> dict[str, str]:
        """Every form a tool displays -> its value (the rows of a hash alias index)."""
        out = {"sha256": self.sha256, "blake3": self.blake3, "crc32": self.crc32, "autov1": self.autov1,
               "autov2": self.autov2, "sha256_short": self.sha256[:12]}
        if self.autov3 is not None:
            out.update(autov3_aliases(self.autov3))
        return out

    def civitai(self) -> dict[str, str]:
        """The ``hashes`` object Civitai lists for a file (upper-case, its key names)."""
        out = {"SHA256": self.sha256.upper(), "AutoV1": self.autov1.upper(), "AutoV2": self.autov2.upper(),
               "CRC32": self.crc32.upper(), "BLAKE3": self.blake3.upper()}
        if self.autov3 is not None:
            out["AutoV3"] = self.autov3[:12].upper()
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HashForms:
        return cls(size=int(data["size"]), sha256=data["sha256"], blake3=data["blake3"], crc32=data["crc32"],
                   autov1=data["autov1"], autov3=data.get("autov3"))


class HashQuery(NamedTuple):
    """A user-given hash, normalised: lower-case hex and the forms it could be."""

    value: str
    forms: tuple[str, ...]


def candidate_forms(text: str) -> HashQuery:
    """Normalise a pasted hash and name the forms it could be.

    Accepts any case, surrounding blanks, A1111's ``[a5f58eb1c3]``, a ``0x`` prefix and the
    ``blake3:`` / ``sha256:`` tags.  ``candidate_forms("A5F58EB1C3")`` is
    ``HashQuery("a5f58eb1c3", ("autov2",))``; 8 hex digits may be AutoV1 or CRC32, 12 an AutoV3
    or a SHA-256 prefix, 64 a SHA-256, BLAKE3 or full AutoV3.  Raises :class:`ValueError` for
    anything else.
    """
    value = text.strip().strip("[]()").strip().lower()
    allowed = tuple(FORM_LENGTHS)
    tag, sep, rest = value.partition(":")
    if sep:
        if tag not in _TAGGED:
            raise ValueError(f"unknown hash tag {tag!r} in {text!r}: use blake3:<hex>, sha256:<hex> or bare hex")
        allowed, value = _TAGGED[tag], rest.strip()
    if value.startswith("0x"):
        value = value[2:]
    if not _HEX.fullmatch(value):
        raise ValueError(f"{text!r} is not a hash: expected hexadecimal digits")
    forms = tuple(f for f in allowed if FORM_LENGTHS[f] == len(value))
    if not forms:
        lengths = sorted({FORM_LENGTHS[f] for f in allowed})
        raise ValueError(f"{text!r} has {len(value)} hex digits; a hash the tools show has "
                         f"{', '.join(map(str, lengths))}")
    return HashQuery(value, forms)


def is_safetensors_name(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(SAFETENSORS_SUFFIXES)


def hash_path(path: str | os.PathLike, *, safetensors: bool | None = None,
              on_bytes: Callable[[int], None] | None = None) -> HashForms:
    """All hash forms of the file at ``path`` (AutoV3 when its name ends in ``.safetensors``
    unless ``safetensors`` says otherwise)."""
    if safetensors is None:
        safetensors = is_safetensors_name(path)
    # O_NONBLOCK: opening a FIFO must not block (hash_fd then refuses it); no effect on files
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        return hash_fd(fd, safetensors=safetensors, on_bytes=on_bytes)
    finally:
        os.close(fd)


def hash_fd(fd: int, *, safetensors: bool = False, on_bytes: Callable[[int], None] | None = None) -> HashForms:
    """All hash forms of the bytes of an open file descriptor, from offset 0 to its end.

    Reads with ``preadv`` (the descriptor's position is left alone).  ``on_bytes(n)`` is called
    after every chunk read (progress).  ``safetensors=True`` adds AutoV3 when the file starts with
    a valid header (length, then a JSON object that fits in the file).
    """
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError):  # not Linux, or a pipe: hints only
        pass
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"file descriptor {fd} is not a regular file")
    size_hint = st.st_size
    state = _State(safetensors)
    if size_hint < THREADED_FROM:
        _hash_inline(fd, state, on_bytes)
    else:
        _hash_threaded(fd, state, on_bytes)
    return state.result()


class _State:
    """The digests of one pass; ``feed`` takes chunks in file order."""

    def __init__(self, safetensors: bool) -> None:
        self.sha = hashlib.sha256()
        self.b3 = blake3()
        self.crc = 0
        self.v1 = hashlib.sha256()
        self.safetensors = safetensors
        self.v3 = hashlib.sha256() if safetensors else None
        self.v3_start: int | None = None  # offset of the tensor data, once the header length is read
        self.header_ok = False
        self.head = bytearray()  # the first 9 bytes (header length + the JSON's first byte)
        self.size = 0

    def note(self, view: memoryview, pos: int) -> None:
        """Bookkeeping done in the reading thread: header, AutoV1 window, size."""
        end = pos + len(view)
        if self.safetensors and len(self.head) < 9:
            self.head += view[: 9 - len(self.head)]
            if len(self.head) >= 8 and self.v3_start is None:
                self.v3_start = 8 + int.from_bytes(self.head[:8], "little")
            if len(self.head) == 9:
                self.header_ok = self.head[8:9] == b"{"
        lo, hi = max(pos, AUTOV1_OFFSET), min(end, AUTOV1_OFFSET + AUTOV1_LENGTH)
        if lo < hi:
            self.v1.update(view[lo - pos: hi - pos])
        self.size = end

    def v3_slice(self, view: memoryview, pos: int) -> memoryview | None:
        if self.v3 is None or self.v3_start is None or pos + len(view) <= self.v3_start:
            return None
        return view[max(0, self.v3_start - pos):]

    def result(self) -> HashForms:
        autov3 = None
        if (self.v3 is not None and self.header_ok and self.v3_start is not None
                and self.v3_start <= self.size):
            autov3 = self.v3.hexdigest()
        return HashForms(size=self.size, sha256=self.sha.hexdigest(), blake3=self.b3.hexdigest(),
                         crc32=f"{self.crc & 0xFFFFFFFF:08x}", autov1=self.v1.hexdigest()[:8], autov3=autov3)


def _hash_inline(fd: int, state: _State, on_bytes: Callable[[int], None] | None) -> None:
    buf = bytearray(CHUNK)
    mem = memoryview(buf)
    pos = 0
    while n := os.preadv(fd, [buf], pos):
        view = mem[:n]
        state.note(view, pos)
        state.sha.update(view)
        state.b3.update(view)
        state.crc = _crc32(view, state.crc)
        if state.v3 is not None and (part := state.v3_slice(view, pos)) is not None:
            state.v3.update(part)
        pos += n
        if on_bytes is not None:
            on_bytes(n)


def _hash_threaded(fd: int, state: _State, on_bytes: Callable[[int], None] | None) -> None:
    """Read in this thread; one lane thread per digest group updates it from the shared buffer.

    A buffer goes back to the free list when every lane has hashed it, so at most
    :data:`_BUFFERS` chunks are in memory and no chunk is copied."""
    free: queue.Queue[int] = queue.Queue()
    bufs = [bytearray(CHUNK) for _ in range(_BUFFERS)]
    for i in range(_BUFFERS):
        free.put(i)
    pending = [0] * _BUFFERS
    lock = threading.Lock()
    failure: list[BaseException] = []

    def release(i: int) -> None:
        with lock:
            pending[i] -= 1
            done = pending[i] == 0
        if done:
            free.put(i)

    def crc_and_blake(view: memoryview) -> None:
        state.b3.update(view)
        state.crc = _crc32(view, state.crc)

    updates: list[Callable[[memoryview], object]] = [state.sha.update, crc_and_blake]
    if state.v3 is not None:
        updates.append(state.v3.update)
    lanes: list[queue.Queue] = [queue.Queue() for _ in updates]

    def lane(todo: queue.Queue, update: Callable[[memoryview], object]) -> None:
        while (item := todo.get()) is not None:
            i, view = item
            try:
                if not failure:
                    update(view)
            except BaseException as exc:  # pragma: no cover - the digests do not fail on bytes
                failure.append(exc)
            finally:
                release(i)

    threads = [threading.Thread(target=lane, args=(q, u), name="comfyvn-hashforms", daemon=True)
               for q, u in zip(lanes, updates, strict=True)]
    for t in threads:
        t.start()
    pos = 0
    try:
        while not failure:
            i = free.get()
            n = os.preadv(fd, [bufs[i]], pos)
            if not n:
                free.put(i)
                break
            view = memoryview(bufs[i])[:n]
            state.note(view, pos)
            parts: list[memoryview | None] = [view, view]
            if state.v3 is not None:
                parts.append(state.v3_slice(view, pos))
            work = [(q, p) for q, p in zip(lanes, parts, strict=True) if p is not None]
            pending[i] = len(work)  # the buffer is not shared yet: no lock needed
            for q, p in work:
                q.put((i, p))
            pos += n
            if on_bytes is not None:
                on_bytes(n)
    finally:
        for q in lanes:
            q.put(None)
        for t in threads:
            t.join()
    if failure:
        raise failure[0]


def safetensors_data_offset(fd: int, size: int) -> int | None:
    """Where a safetensors file's tensor data starts (``8 + header length``), or None when the
    file has no valid header (as :class:`_State` decides: the length fits, the JSON starts with ``{``)."""
    head = os.pread(fd, 9, 0)
    if len(head) < 9 or head[8:9] != b"{":
        return None
    start = 8 + int.from_bytes(head[:8], "little")
    return start if start <= size else None


def autov3_fd(fd: int, *, on_bytes: Callable[[int], None] | None = None) -> str | None:
    """AutoV3 of an open safetensors file alone (SHA-256 of the bytes after its header), or None
    when it has no valid header: what :func:`hash_fd` computes with ``safetensors=True``, as a
    pass of its own (the library's background phase).  One thread, :data:`CHUNK` reads into one
    reused buffer (``preadv``, no copy)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"file descriptor {fd} is not a regular file")
    pos = safetensors_data_offset(fd, st.st_size)
    if pos is None:
        return None
    try:
        os.posix_fadvise(fd, pos, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError):  # hints only
        pass
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    mem = memoryview(buf)
    while n := os.preadv(fd, [buf], pos):
        digest.update(mem[:n])
        pos += n
        if on_bytes is not None:
            on_bytes(n)
    return digest.hexdigest()


def hash_bytes(data: bytes, *, safetensors: bool = False) -> HashForms:
    """All hash forms of an in-memory ``bytes`` (for small payloads and tests of callers)."""
    state = _State(safetensors)
    view = memoryview(data)
    state.note(view, 0)
    state.sha.update(view)
    state.b3.update(view)
    state.crc = _crc32(view, 0)
    if state.v3 is not None and (part := state.v3_slice(view, 0)) is not None:
        state.v3.update(part)
    return state.result()


__all__ = ["CHUNK", "FORM_LENGTHS", "HashForms", "HashQuery", "autov3_aliases", "autov3_fd", "candidate_forms", "hash_bytes", "hash_fd",
           "hash_path", "is_safetensors_name", "safetensors_data_offset"]

"""Every ecosystem hash in one pass: each form checked against its rule computed independently."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from blake3 import blake3

import comfyvn.hashforms as hf
from comfyvn.hashforms import HashForms, HashQuery, candidate_forms, hash_bytes, hash_fd, hash_path

MiB = 1024 * 1024


def reference(data: bytes, *, safetensors: bool) -> dict:
    """The rules as the tools state them, written out on the whole bytes at once."""
    sha = hashlib.sha256(data).hexdigest()
    out = {
        "size": len(data),
        "sha256": sha,
        "blake3": blake3(data).hexdigest(),
        "crc32": f"{zlib.crc32(data):08x}",
        # A1111 model_hash: seek(0x100000); sha256(read(0x10000))[:8]  (a short read hashes what is there)
        "autov1": hashlib.sha256(data[0x100000:0x100000 + 0x10000]).hexdigest()[:8],
        "autov3": None,
    }
    if safetensors:
        # kohya addnet_hash_safetensors: n = u64 LE; sha256 of data[8 + n:]
        n = int.from_bytes(data[:8], "little")
        out["autov3"] = hashlib.sha256(data[8 + n:]).hexdigest()
    return out


def safetensors_bytes(tensor_bytes: int, *, pad_header_to: int = 0) -> bytes:
    """A real safetensors file: 8-byte LE header length, JSON header, then F32 tensor data."""
    count = tensor_bytes // 4
    header = {"__metadata__": {"format": "pt"},
              "weight": {"dtype": "F32", "shape": [count], "data_offsets": [0, count * 4]}}
    raw = json.dumps(header).encode()
    raw += b" " * max(0, pad_header_to - len(raw))  # the spec allows trailing blanks in the header
    data = os.urandom(count * 4)
    return struct.pack("<Q", len(raw)) + raw + data


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


SIZES = [0, 1, 100, MiB - 1, MiB, MiB + 1, MiB + 0x10000 - 1, MiB + 0x10000, MiB + 0x10000 + 1,
         hf.CHUNK - 1, hf.CHUNK + 7, hf.THREADED_FROM + 3 * MiB + 4097]


@pytest.mark.parametrize("size", SIZES)
def test_every_form_of_plain_files_matches_its_rule(tmp_path, size):
    data = os.urandom(size)
    path = write(tmp_path / "model.ckpt", data)
    forms = hash_path(path)
    assert forms.to_dict() == reference(data, safetensors=False)
    assert forms.autov2 == forms.sha256[:10]


def test_empty_file_has_the_hashes_of_no_bytes(tmp_path):
    forms = hash_path(write(tmp_path / "empty.bin", b""))
    assert forms.size == 0
    assert forms.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert forms.autov1 == "e3b0c442"  # A1111 on a file shorter than 1 MiB: sha256 of b""
    assert forms.crc32 == "00000000"
    assert forms.blake3 == blake3(b"").hexdigest()


@pytest.mark.parametrize("tensor_bytes", [0, 4096, 3 * MiB, hf.THREADED_FROM + 5 * MiB + 12])
def test_safetensors_autov3_is_sha256_after_the_header(tmp_path, tensor_bytes):
    data = safetensors_bytes(tensor_bytes)
    forms = hash_path(write(tmp_path / "lora.safetensors", data))
    assert forms.to_dict() == reference(data, safetensors=True)
    n = int.from_bytes(data[:8], "little")
    assert json.loads(data[8:8 + n])["weight"]["dtype"] == "F32"  # the file really is a safetensors file
    assert forms.autov3 != forms.sha256


def test_autov3_when_the_header_spans_several_chunks(tmp_path):
    data = safetensors_bytes(3 * MiB, pad_header_to=hf.CHUNK + 100)  # tensor data starts in the 2nd chunk
    forms = hash_path(write(tmp_path / "big-header.safetensors", data))
    assert forms.to_dict() == reference(data, safetensors=True)


def test_autov3_does_not_depend_on_the_header(tmp_path):
    """The point of AutoV3: editing metadata changes SHA-256 but not AutoV3."""
    data = safetensors_bytes(2 * MiB)
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"]["title"] = "renamed"
    raw = json.dumps(header).encode()
    edited = struct.pack("<Q", len(raw)) + raw + data[8 + n:]
    a = hash_path(write(tmp_path / "a.safetensors", data))
    b = hash_path(write(tmp_path / "b.safetensors", edited))
    assert a.sha256 != b.sha256 and a.autov3 == b.autov3


@pytest.mark.parametrize("data", [
    b"",                                                      # empty
    b"\x05\x00\x00",                                          # shorter than the length field
    struct.pack("<Q", 1000) + b"{}",                          # header longer than the file
    struct.pack("<Q", 2) + b"[]" + os.urandom(64),            # header is not a JSON object
], ids=["empty", "short", "truncated", "not-object"])
def test_no_autov3_for_a_file_that_is_not_a_valid_safetensors(tmp_path, data):
    forms = hash_path(write(tmp_path / "broken.safetensors", data))
    assert forms.autov3 is None
    assert forms.sha256 == hashlib.sha256(data).hexdigest()


def test_autov3_only_for_safetensors_unless_asked(tmp_path):
    data = safetensors_bytes(4096)
    assert hash_path(write(tmp_path / "x.bin", data)).autov3 is None
    assert hash_path(tmp_path / "x.bin", safetensors=True).autov3 == reference(data, safetensors=True)["autov3"]
    assert hash_path(write(tmp_path / "X.SafeTensors", data)).autov3 is not None


def test_hash_fd_reads_from_the_start_and_leaves_the_position(tmp_path):
    data = safetensors_bytes(hf.THREADED_FROM + MiB)
    path = write(tmp_path / "m.safetensors", data)
    with open(path, "rb") as fh:
        fh.seek(12345)
        forms = hash_fd(fh.fileno(), safetensors=True)
        assert fh.tell() == 12345
    assert forms.to_dict() == reference(data, safetensors=True)


def test_threaded_and_inline_paths_agree(tmp_path, monkeypatch):
    data = safetensors_bytes(hf.THREADED_FROM + 2 * MiB + 3)
    path = write(tmp_path / "m.safetensors", data)
    threaded = hash_path(path)
    monkeypatch.setattr(hf, "THREADED_FROM", 1 << 62)
    assert hash_path(path) == threaded
    assert hash_bytes(data, safetensors=True) == threaded


def test_one_read_pass_in_big_chunks(tmp_path, monkeypatch):
    data = os.urandom(hf.THREADED_FROM + 3 * MiB)
    path = write(tmp_path / "m.safetensors", data)
    reads: list[tuple[int, int]] = []
    real = os.preadv

    def counting(fd, buffers, offset):
        n = real(fd, buffers, offset)
        reads.append((offset, n))
        return n

    monkeypatch.setattr(os, "preadv", counting)
    progress: list[int] = []
    hash_path(path, on_bytes=progress.append)
    assert sum(n for _, n in reads) == len(data)  # every byte read exactly once
    assert [o for o, _ in reads] == sorted({o for o, _ in reads})  # in order, no re-read
    assert all(n == hf.CHUNK for _, n in reads[:-2])
    assert sum(progress) == len(data)


def test_unreadable_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        hash_path(tmp_path / "missing.safetensors")
    with pytest.raises(OSError, match="not a regular file"):
        hash_path(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OSError, match="not a regular file"):  # refused, not blocked on the open
        hash_path(tmp_path / "pipe")


def test_civitai_shape_and_aliases():
    data = safetensors_bytes(4096)
    forms = hash_bytes(data, safetensors=True)
    ref = reference(data, safetensors=True)
    assert forms.civitai() == {"SHA256": ref["sha256"].upper(), "AutoV1": ref["autov1"].upper(),
                               "AutoV2": ref["sha256"][:10].upper(), "CRC32": ref["crc32"].upper(),
                               "BLAKE3": ref["blake3"].upper(), "AutoV3": ref["autov3"][:12].upper()}
    aliases = forms.aliases()
    for form, value in aliases.items():
        assert form in candidate_forms(value.upper()).forms
    assert HashForms.from_dict(forms.to_dict()) == forms
    plain = hash_bytes(data)
    assert "autov3" not in plain.aliases() and "AutoV3" not in plain.civitai()


@pytest.mark.parametrize("text, expected", [
    ("a5f58eb1c3", HashQuery("a5f58eb1c3", ("autov2",))),
    ("  A5F58EB1C3\n", HashQuery("a5f58eb1c3", ("autov2",))),
    ("[a5f58eb1c3]", HashQuery("a5f58eb1c3", ("autov2",))),
    ("4748A7F6", HashQuery("4748a7f6", ("autov1", "crc32"))),
    ("22D8CB95B807", HashQuery("22d8cb95b807", ("autov3_short", "sha256_short"))),
    ("AB" * 32, HashQuery("ab" * 32, ("sha256", "blake3", "autov3"))),
    ("blake3:" + "AB" * 32, HashQuery("ab" * 32, ("blake3",))),
    ("sha256:" + "ab" * 32, HashQuery("ab" * 32, ("sha256",))),
    ("0x" + "ab" * 32, HashQuery("ab" * 32, ("sha256", "blake3", "autov3"))),
])
def test_candidate_forms(text, expected):
    assert candidate_forms(text) == expected


@pytest.mark.parametrize("text", ["", "xyz", "a5f58eb1c", "a5f58eb1c3a5f58", "ab" * 33, "md5:" + "ab" * 16,
                                  "blake3:a5f58eb1c3", "a5f5 8eb1c3"])
def test_candidate_forms_refuses_what_no_tool_shows(text):
    with pytest.raises(ValueError):
        candidate_forms(text)


@pytest.mark.parametrize(("data", "valid"), [
    (safetensors_bytes(0), True), (safetensors_bytes(4096), True), (safetensors_bytes(hf.CHUNK + 12345), True),
    (safetensors_bytes(3 * MiB, pad_header_to=hf.CHUNK + 100), True),  # the tensor data starts in the 2nd chunk
    (struct.pack("<Q", 2) + b"{}", True),  # a header and no tensor data: the AutoV3 of no bytes
    (b"", False), (b"\x05\x00\x00", False), (struct.pack("<Q", 1000) + b"{}", False),
    (struct.pack("<Q", 2) + b"[]" + os.urandom(64), False),
], ids=["no-tensor", "small", "over-a-chunk", "header-over-a-chunk", "header-only", "empty", "short", "truncated",
        "not-object"])
def test_autov3_alone_equals_the_one_pass_autov3(tmp_path, data, valid):
    """The background phase's pass (AutoV3 alone) gives what the one pass gives, valid or not."""
    path = write(tmp_path / "m.safetensors", data)
    one_pass = hash_path(path).autov3
    assert (one_pass is not None) == valid
    if valid:
        assert one_pass == reference(data, safetensors=True)["autov3"]
    seen: list[int] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        assert hf.autov3_fd(fd, on_bytes=seen.append) == one_pass
    finally:
        os.close(fd)
    n = int.from_bytes(data[:8], "little") if valid else 0
    assert sum(seen) == (len(data) - 8 - n if valid else 0)  # only the tensor data is read


def test_autov3_aliases_are_the_forms_hashforms_lists():
    forms = hash_bytes(safetensors_bytes(4096), safetensors=True)
    assert {k: v for k, v in forms.aliases().items() if k.startswith("autov3")} == hf.autov3_aliases(forms.autov3)

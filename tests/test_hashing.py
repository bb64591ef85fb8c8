"""One-pass copy + SHA-256 of big files: the kernel copy, its fallbacks, and what the digest covers."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

import comfyvn.hashing as hashing
from comfyvn.hashing import LARGE_FILE, copy_and_hash, copy_and_hash_large, sha256_file

SIZE = LARGE_FILE + 5 * 1024 * 1024 + 4097  # not a multiple of any chunk or page


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "model.safetensors"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def copy(src: Path, dest: Path, mode: str = "w+b") -> tuple[str, int]:
    with open(dest, mode) as fh:
        return copy_and_hash_large(src, fh, fsync=False)


def test_kernel_copy_gives_the_digest_of_the_bytes_written(big, tmp_path):
    src, digest = big
    assert copy(src, tmp_path / "out") == (digest, SIZE)
    assert sha256_file(tmp_path / "out") == (digest, SIZE)


def test_short_kernel_copies_leave_unaligned_ranges_hashed_right(big, tmp_path, monkeypatch):
    real = os.copy_file_range
    calls = []

    def short(src_fd, dst_fd, count, *args):
        calls.append(count)
        return real(src_fd, dst_fd, min(count, 3 * 1024 * 1024 + 123), *args)

    monkeypatch.setattr(hashing.os, "copy_file_range", short)
    assert copy(big[0], tmp_path / "out") == (big[1], SIZE)
    assert len(calls) > 5  # many ranges, none page-aligned after the first


@pytest.mark.parametrize("err", [errno.EXDEV, errno.ENOSYS, errno.EINVAL])
def test_without_copy_file_range_the_pipelined_copy_takes_over(big, tmp_path, monkeypatch, err):
    def refuse(*args):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(hashing.os, "copy_file_range", refuse)
    assert copy(big[0], tmp_path / "out") == (big[1], SIZE)
    assert (tmp_path / "out").read_bytes() == big[0].read_bytes()


def test_a_write_only_destination_takes_the_pipelined_copy(big, tmp_path, monkeypatch):
    monkeypatch.setattr(hashing.os, "copy_file_range", None)  # must not be reached
    assert copy(big[0], tmp_path / "out", mode="wb") == (big[1], SIZE)  # O_WRONLY: cannot be read back


def test_an_unmappable_destination_is_hashed_by_reading_it(big, tmp_path, monkeypatch):
    def no_mmap(*args, **kwargs):
        raise OSError(errno.ENODEV, "no mmap here")

    monkeypatch.setattr(hashing.mmap, "mmap", no_mmap)
    assert copy(big[0], tmp_path / "out") == (big[1], SIZE)


def test_small_files_take_the_simple_loop(tmp_path):
    src = tmp_path / "small.bin"
    src.write_bytes(b"tiny" * 100)
    with open(tmp_path / "out", "wb") as fh:
        assert copy_and_hash_large(src, fh, fsync=False) == copy_and_hash(src, open(os.devnull, "wb"), fsync=False)
    assert (tmp_path / "out").read_bytes() == src.read_bytes()


# -- copying from an open descriptor, never past a limit (comfyvn.sources) --------------------
def copy_fd(src: Path, dest: Path, limit: int | None, mode: str = "w+b") -> tuple[str, int]:
    fd = os.open(src, os.O_RDONLY)
    try:
        with open(dest, mode) as fh:
            return hashing.copy_and_hash_fd(fd, fh, fsync=False, limit=limit)
    finally:
        os.close(fd)


@pytest.mark.parametrize("path", ["kernel", "pipelined", "small"])
def test_a_descriptor_copy_stops_one_byte_past_its_limit(big, tmp_path, monkeypatch, path):
    src, digest = big
    if path == "pipelined":
        monkeypatch.setattr(hashing.os, "copy_file_range", lambda *a: (_ for _ in ()).throw(OSError(errno.EXDEV, "x")))
    if path == "small":
        src = tmp_path / "small.bin"
        src.write_bytes(os.urandom(300_000))
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
    size = src.stat().st_size
    assert copy_fd(src, tmp_path / "exact", limit=size) == (digest, size)  # exactly the limit is fine
    with pytest.raises(hashing.LimitExceededError):
        copy_fd(src, tmp_path / "over", limit=size - 1000)
    assert (tmp_path / "over").stat().st_size <= size - 1000 + 1  # never copies more than limit + 1 bytes


def test_sha256_fd_hashes_from_the_start_and_honours_its_limit(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(100_000)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, 10)  # the offset is rewound
        assert hashing.sha256_fd(fd) == (hashlib.sha256(data).hexdigest(), len(data))
        with pytest.raises(hashing.LimitExceededError):
            hashing.sha256_fd(fd, limit=99_999)
    finally:
        os.close(fd)


# -- HashingWriter: grouped writes, hashed on a helper thread (the pipelined copy, remote pulls) ----
def test_hashing_writer_digest_and_file_match_the_bytes_fed_across_groups(tmp_path):
    data = os.urandom(3 * 65536 + 777)
    seed = hashlib.sha256(b"a kept prefix")  # a resumed download continues its hash
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"a kept prefix")
        writer = hashing.HashingWriter(fd, seed, group=65536, depth=2)
        view, pos = memoryview(data), 0
        for piece in (1, 65535, 70000, 3, 100000):  # fed pieces straddle the group boundaries
            writer.feed(view[pos:pos + piece])
            pos += piece
        while pos < len(data):  # the rest read "into" the writer's own buffer
            room = writer.space(len(data) - pos)
            room[:len(room)] = view[pos:pos + len(room)]
            writer.landed(len(room))
            pos += len(room)
        assert writer.close() == hashlib.sha256(b"a kept prefix" + data).hexdigest()
        assert writer.written == len(data)
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == b"a kept prefix" + data


def test_hashing_writer_waits_for_a_slow_hash_instead_of_buffering_more(tmp_path):
    """Memory stays bounded: with the hash stuck, at most ``depth`` groups are written ahead."""
    import threading

    release = threading.Event()

    class StuckHash:
        def __init__(self) -> None:
            self.h = hashlib.sha256()

        def update(self, data) -> None:
            release.wait()
            self.h.update(data)

        def hexdigest(self) -> str:
            return self.h.hexdigest()

    data = os.urandom(10 * 4096)
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        writer = hashing.HashingWriter(fd, StuckHash(), group=4096, depth=3)
        feeder = threading.Thread(target=writer.feed, args=(data,))
        feeder.start()
        feeder.join(0.5)
        assert feeder.is_alive()  # blocked on a free buffer
        assert writer.written <= 3 * 4096
        release.set()
        feeder.join()
        assert writer.close() == hashlib.sha256(data).hexdigest()
    finally:
        release.set()
        os.close(fd)

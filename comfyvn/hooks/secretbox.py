"""Webhook secrets at rest: AES-256-GCM with a key kept outside the database.

The key lives in the workspace's ``config/secrets.key`` (32 random bytes, base64), created on
first use with owner-only permissions (0600) and published atomically (a temporary file linked
into place, so two processes starting at once agree on one key).  A copy of the database alone
does not reveal a secret; the database and the key file together do, so back them up apart.

A sealed value is ``v1:<base64(nonce | ciphertext+tag)>``; the webhook id is the associated
data, so a sealed secret copied onto another webhook row does not open.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..config import ConfigError, Workspace
from ..fsutil import fsync_dir

log = logging.getLogger("comfyvn.hooks.secretbox")

KEY_FILE_NAME = "secrets.key"
_PREFIX = "v1:"
_NONCE_BYTES = 12


class SecretKeyError(ConfigError):
    """The key file is unreadable or malformed, or a sealed secret does not open with it."""


def key_path(ws: Workspace) -> Path:
    return ws.config_file.parent / KEY_FILE_NAME


def _read_key(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:  # readable by others: tighten it (we own the workspace) and say so
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        log.warning("%s was readable by other users; its permissions are now 0600", path)
    try:
        key = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        raise SecretKeyError(f"{path} is not a base64 key; restore it from a backup (without it the stored "
                             "webhook secrets cannot be used: re-register the webhooks)") from None
    if len(key) != 32:
        raise SecretKeyError(f"{path} holds a {len(key)}-byte key; a 32-byte key is expected")
    return key


def _create_key(path: Path) -> None:
    """Write a new random key at ``path`` unless one appears there first (0600, atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(base64.b64encode(os.urandom(32)).decode("ascii") + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # fails if another process published its key first: use that one
        except FileExistsError:
            pass
        else:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


_keys: dict[Path, bytes] = {}
_keys_lock = threading.Lock()


def workspace_key(ws: Workspace) -> bytes:
    """The workspace's secret key, created on first use."""
    path = key_path(ws)
    with _keys_lock:
        key = _keys.get(path)
        if key is None:
            if not path.exists():
                _create_key(path)
            key = _keys[path] = _read_key(path)
        return key


def seal(ws: Workspace, plaintext: str, context: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(workspace_key(ws)).encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
    return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def open_sealed(ws: Workspace, token: str, context: str) -> str:
    if not token.startswith(_PREFIX):
        raise SecretKeyError("unknown sealed-secret format")
    try:
        raw = base64.b64decode(token[len(_PREFIX):], validate=True)
        plain = AESGCM(workspace_key(ws)).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8"))
    except (binascii.Error, ValueError, InvalidTag):
        raise SecretKeyError(f"the stored secret does not open with {key_path(ws)} (the key file was replaced or "
                             "lost); re-register the webhook with its secret") from None
    return plain.decode("utf-8")


def forget_cached_keys() -> None:
    """Drop the keys cached in this process (tests that delete a key file)."""
    with _keys_lock:
        _keys.clear()

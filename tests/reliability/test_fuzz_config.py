"""Fuzz ``load_config``: any bytes in ``config/comfyvn.json`` give a dict or a ConfigError naming the file."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyvn.config import ConfigError, feature_enabled, get_setting, load_config, workspace

from .fuzzkit import count, fuzz_settings

DEFAULT_KEYS = ("features", "ingest", "registry", "hooks")

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)
# objects shaped like a config file: known sections with arbitrary (often wrong) contents
config_like = st.fixed_dictionaries({}, optional={
    "features": st.dictionaries(st.sampled_from(["enable_asset_ingest", "require_remote_terms_ack", "x"]),
                                json_values, max_size=3) | json_values,
    "ingest": st.dictionaries(st.sampled_from(["rate_limit_rps", "max_remote_bytes", "allowed_source_roots",
                                               "providers", "host_overrides", "allow_private_addresses"]),
                              json_values, max_size=4) | json_values,
    "registry": st.dictionaries(st.sampled_from(["default_project", "thumbnail_sizes"]), json_values, max_size=2),
    "hooks": st.dictionaries(st.sampled_from(["history_limit", "webhook_max_attempts"]), json_values, max_size=2),
})


def _encode(value) -> bytes:
    return json.dumps(value).encode("utf-8")


payloads = st.one_of(
    st.binary(max_size=300),
    json_values.map(_encode),
    config_like.map(_encode),
    # a valid file with bytes flipped / cut
    st.tuples(config_like.map(_encode), st.integers(0, 400), st.binary(min_size=1, max_size=3)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1:]),
    # nesting deeper than any parser's recursion limit
    st.integers(500, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(500, 200_000).map(lambda n: b'{"features":' * n + b"{}" + b"}" * n),
    st.integers(400, 5_000).map(lambda n: b'{"plugin":' + b'{"a":' * n + b"1" + b"}" * (n + 1)),
)


def _check(ws, data: bytes) -> None:
    ws.config_file.parent.mkdir(parents=True, exist_ok=True)
    ws.config_file.write_bytes(data)
    try:
        merged = load_config(ws)
    except ConfigError as exc:
        assert str(ws.config_file) in str(exc), f"ConfigError does not name the file: {exc}"
        return
    assert isinstance(merged, dict)
    for key in DEFAULT_KEYS:  # the shipped defaults are always present and well-typed
        assert isinstance(merged[key], dict), key
    assert all(isinstance(v, bool) for v in merged["features"].values())
    # the readers built on it behave the same way (no other exception)
    assert isinstance(feature_enabled("enable_asset_ingest", ws), bool)
    get_setting("ingest.rate_limit_rps", None, ws)


@fuzz_settings(300)
@given(data=payloads)
def test_load_config_any_bytes_gives_dict_or_config_error(tmp_path, data):
    count("config.load_config")
    # a fresh folder per example: the config cache is keyed by path, mtime and size
    ws = workspace(tmp_path / uuid.uuid4().hex)
    _check(ws, data)


@pytest.mark.parametrize("data", [
    b"[" * 100_000 + b"]" * 100_000,  # the JSON parser gives up: RecursionError
    b'{"plugin":' + b'{"a":' * 600 + b"1" + b"}" * 601,  # parses, then merging with the defaults recursed
], ids=["parser", "merge"])
def test_deeply_nested_config_is_a_config_error(tmp_path, data):
    """Found by the fuzzer: deep nesting escaped ``load_config`` as RecursionError, not ConfigError."""
    ws = workspace(tmp_path)
    ws.config_file.parent.mkdir(parents=True)
    ws.config_file.write_bytes(data)
    with pytest.raises(ConfigError, match=str(ws.config_file)):
        load_config(ws)

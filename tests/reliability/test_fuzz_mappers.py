"""Fuzz ``normalise_metadata``: arbitrary JSON-ish input never crashes it, and the output keeps its shape.

Inputs are (a) arbitrary JSON objects, (b) objects shaped like the provider APIs with wrong
types in every field, and (c) the real-shaped provider fixtures with random values replaced.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyvn.ingest.mappers import normalise_metadata
from comfyvn.rights import COMMERCIAL_LEVELS, TERM_KEYS
from tests.fakes.provider_server import FIXTURES_DIR

from .fuzzkit import count, fuzz_settings

PROVIDERS = ["local", "civitai", "huggingface", "furaffinity", "generic"]
SHAPE_KEYS = {"provider", "title", "description", "author", "tags", "license", "license_terms", "nsfw",
              "base_model", "trained_words", "model_type", "source_url", "gated", "file"}

scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=16) | st.sampled_from(["false", "False", "0", "true", "no", "", " , ,", "a,b, c", "{Image,Rent}"])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=16)
API_KEYS = ["id", "name", "description", "type", "nsfw", "nsfwLevel", "tags", "creator", "modelVersions", "files",
            "hashes", "sizeKB", "metadata", "primary", "downloadUrl", "modelId", "trainedWords", "baseModel", "model",
            "allowCommercialUse", "allowDerivatives", "allowNoCredit", "allowDifferentLicense", "air", "publishedAt",
            "siblings", "cardData", "pipeline_tag", "library_name", "gated", "sha", "author", "lfs", "rfilename",
            "license", "licence", "license_tag", "license_name", "base_model", "instance_prompt", "keywords",
            "profile_name", "rating", "download", "link", "title", "trained_words", "source_url", "license_terms",
            "version_id", "file_id", "file_type", "filename"]
api_shaped = st.recursive(
    st.dictionaries(st.sampled_from(API_KEYS), json_values, max_size=8),
    lambda inner: st.dictionaries(st.sampled_from(API_KEYS), inner | st.lists(inner, max_size=3) | json_values,
                                  max_size=8),
    max_leaves=12)

_FALLBACK_DOCS = {  # used only when the shared fixtures folder is absent (fresh clone)
    "civitai": {"id": 1, "name": "m", "allowCommercialUse": ["Image"], "tags": ["a"], "creator": {"username": "u"},
                "modelVersions": [{"id": 2, "baseModel": "SDXL 1.0", "trainedWords": ["w"], "files": [
                    {"id": 3, "name": "f.safetensors", "sizeKB": 1.5, "primary": True,
                     "hashes": {"SHA256": "AB"}, "metadata": {"format": "SafeTensor"}}]}]},
    "huggingface": {"id": "org/repo", "tags": ["license:mit", "lora"], "gated": False,
                    "cardData": {"license": "mit", "tags": ["x"], "base_model": "b"},
                    "siblings": [{"rfilename": "a.safetensors", "lfs": {"sha256": "ab", "size": 3}}]},
}


def _fixture_docs() -> list[tuple[str, dict]]:
    docs = []
    for provider, name in (("civitai", "civitai/model.json"), ("civitai", "civitai/model_version.json"),
                           ("civitai", "civitai/by_hash.json"), ("huggingface", "huggingface/model_info.json"),
                           ("huggingface", "huggingface/model_info_gated.json")):
        path = FIXTURES_DIR / name
        if path.is_file():
            docs.append((provider, json.loads(path.read_text(encoding="utf-8"))))
    return docs or list(_FALLBACK_DOCS.items())


DOCS = _fixture_docs()


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replace(doc, path, value):
    if not path:
        return value
    node = json.loads(json.dumps(doc))
    target = node
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return node


@st.composite
def mutated_fixture(draw):
    provider, doc = draw(st.sampled_from(DOCS))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        doc = _replace(doc, draw(st.sampled_from(paths)), draw(json_values))
    return provider, doc


hints = st.fixed_dictionaries({}, optional={"filename": st.text(max_size=12), "sha256": st.text(max_size=64),
                                            "file_id": json_values, "version_id": json_values})


def _check_shape(provider: str, raw: dict, out: dict) -> None:
    assert SHAPE_KEYS <= set(out), SHAPE_KEYS - set(out)
    assert out["provider"] == provider
    assert isinstance(out["tags"], list) and all(isinstance(t, str) for t in out["tags"])
    assert all(t == " ".join(t.strip().lower().split()) and t for t in out["tags"]), out["tags"]
    assert len(out["tags"]) == len(set(out["tags"]))
    assert out["nsfw"] in (None, True, False)
    assert isinstance(out["license_terms"], dict)
    # structured rights: every key present, every value one of the documented ones
    terms = out["license_terms"]
    assert set(TERM_KEYS) <= set(terms)
    assert terms["commercial_use"] in (None, *COMMERCIAL_LEVELS)
    assert all(terms[k] in (None, True, False) for k in ("credit_required", "derivatives_allowed",
                                                          "relicense_allowed"))
    assert terms["source"] in (None, "provider", "licence-file", "user", "base-model")
    assert out["license"] is None or (isinstance(out["license"], str) and out["license"] == out["license"].lower())
    assert isinstance(out["trained_words"], list)
    json.dumps(out)  # it goes into a database row and a sidecar: JSON in, JSON out
    # a base model is never taken for a licence
    base = raw.get("baseModel")
    if isinstance(base, str) and base and not any(k in raw for k in ("license", "licence", "license_tag")):
        assert out["license"] != base


def _run(provider: str, raw: dict, extra: dict) -> dict:
    try:
        out = normalise_metadata(provider, raw, **extra)
    except ValueError as exc:
        if provider in ("civitai", "huggingface") and "error" in raw and "answered with an error" in str(exc):
            return {}  # an {"error": ...} body is refused, never read as metadata
        raise AssertionError(f"normalise_metadata({provider!r}, {raw!r:.400}, {extra!r}) raised {exc}") from exc
    except Exception as exc:  # pragma: no cover - shown with the input that broke it
        raise AssertionError(f"normalise_metadata({provider!r}, {raw!r:.400}, {extra!r}) raised "
                             f"{type(exc).__name__}: {exc}") from exc
    _check_shape(provider, raw, out)
    return out


@fuzz_settings(150)
@given(provider=st.sampled_from(PROVIDERS), raw=st.dictionaries(st.text(max_size=12), json_values, max_size=6),
       extra=hints)
def test_arbitrary_objects_never_crash(provider, raw, extra):
    count("mappers.arbitrary")
    _run(provider, raw, extra)


@fuzz_settings(150)
@given(provider=st.sampled_from(PROVIDERS), raw=api_shaped, extra=hints)
def test_api_shaped_objects_with_wrong_types_never_crash(provider, raw, extra):
    count("mappers.api_shaped")
    _run(provider, raw, extra)


@fuzz_settings(80)
@given(case=mutated_fixture(), extra=hints)
def test_mutated_provider_fixtures_never_crash(case, extra):
    count("mappers.mutated_fixtures")
    provider, raw = case
    _run(provider, raw, extra)


@fuzz_settings(100)
@given(provider=st.sampled_from(PROVIDERS), raw=json_values.filter(lambda v: not isinstance(v, dict) and v is not None))
def test_non_objects_are_a_clear_value_error(provider, raw):
    count("mappers.non_objects")
    with pytest.raises(ValueError, match="metadata must be a JSON object"):
        normalise_metadata(provider, raw)


@fuzz_settings(100)
@given(tags=st.lists(st.text(max_size=10), max_size=6), nsfw=st.sampled_from(["false", "False", "0", "no", "off"]))
def test_string_tags_split_on_commas_and_false_means_false(tags, nsfw):
    count("mappers.tags_bools")
    out = normalise_metadata("generic", {"tags": ",".join(tags), "nsfw": nsfw})
    expected = []
    for tag in ",".join(tags).split(","):
        clean = " ".join(tag.strip().lower().split())
        if clean and clean not in expected:
            expected.append(clean)
    assert out["tags"] == expected
    assert out["nsfw"] is False


@pytest.mark.parametrize("provider,raw,extra", [
    ("civitai", {"modelVersions": [{"files": [{"hashes": ["SHA256"]}]}]}, {"sha256": "ab"}),
    ("civitai", {"files": [{"metadata": "SafeTensor", "sizeKB": 1}]}, {}),
    ("civitai", {"files": [{"hashes": True}]}, {}),
    ("huggingface", {"cardData": {"tags": 5}, "siblings": []}, {}),
    ("huggingface", {"siblings": [{"rfilename": "a", "lfs": {"sha256": 7}}]}, {"sha256": "ab"}),
    ("furaffinity", {"rating": "General", "download": 42}, {}),
], ids=["civitai-hashes-list", "civitai-metadata-string", "civitai-hashes-bool", "hf-card-tags-number",
        "hf-lfs-sha-number", "fa-download-number"])
def test_wrong_types_found_by_the_fuzzer(provider, raw, extra):
    """Examples the fuzzer produced; each raised AttributeError/TypeError (an HTTP 500 through the API)."""
    _run(provider, raw, extra)

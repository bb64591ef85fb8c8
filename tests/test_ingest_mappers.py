"""Provider metadata mappers (real API shapes from the shared fixtures) and the host allowlist."""

from __future__ import annotations

import copy
import json

import pytest

from comfyvn.config import update_config
from comfyvn.ingest.mappers import (
    _REMOTE_ALLOWLIST,
    allowed_host_patterns,
    commercial_use,
    host_matches,
    is_host_allowed,
    merge_metadata,
    normalise_metadata,
    provider_for_url,
    to_bool,
)
from tests.fakes.provider_server import FIXTURES_DIR


def fixture(name: str) -> dict:
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- civitai
def test_civitai_model_shape_picks_the_newest_version_and_its_primary_file():
    meta = normalise_metadata("civitai", fixture("civitai/model.json"))
    assert meta["provider"] == "civitai" and meta["title"] == "Inkwash Heroine Style"
    assert meta["author"] == "fixture_inkmaker" and meta["model_type"] == "LORA"
    assert meta["tags"] == ["style", "anime", "ink wash", "character", "visual novel"]
    assert meta["base_model"] == "SDXL 1.0" and meta["license"] is None  # a base model is no licence
    assert meta["trained_words"] == ["inkwash heroine", "ink wash"]
    assert meta["license_terms"] == {"allow_commercial_use": ["Image", "RentCivit"], "allow_derivatives": True,
                                     "allow_no_credit": True, "allow_different_license": False,
                                     "commercial_use": "rent-civit", "credit_required": False,
                                     "derivatives_allowed": True, "relicense_allowed": False,
                                     "source": "provider", "base_model_license": "openrail++"}
    assert meta["asset_type"] == "lora" and meta["folder"] == "loras"
    assert meta["nsfw"] is False and meta["model_id"] == 913572 and meta["version_id"] == 1184630
    assert meta["file"]["name"] == "inkwashHeroine_v20.safetensors" and meta["file"]["primary"] is True
    assert meta["file"]["sha256"] == "5aa7e63d24217f0d43de816446389fe5e45ae125274f8f0702638689470e5cc9"
    assert meta["file"]["size"] == 2731337  # sizeKB * 1024
    assert meta["description"].startswith("Soft ink-wash rendering") and "<p>" not in meta["description"]
    assert meta["source_url"] == "https://civitai.com/models/913572?modelVersionId=1184630"


def test_civitai_model_shape_selects_a_version_and_a_file_by_hint():
    raw = fixture("civitai/model.json")
    v1 = normalise_metadata("civitai", raw, version_id=1021947)
    assert v1["version_name"] == "v1.0" and v1["trained_words"] == ["inkwash heroine"]
    assert v1["description"].startswith("Soft ink-wash")  # v1.0 has no description key at all
    by_sha = normalise_metadata("civitai", raw,
                                sha256="49f1527441d0d29bf9bc874ebeb8033cb5ccf850f80ab55e57db3417e90bd4f5")
    assert by_sha["version_id"] == 1021947 and by_sha["file"]["id"] == 934682
    zip_file = normalise_metadata("civitai", raw, filename="inkwashHeroine_v20_trainingData.zip")
    assert zip_file["file"]["type"] == "Training Data" and zip_file["file"]["primary"] is False
    assert zip_file["file"]["format"] == "Other" and zip_file["file"]["fp"] is None


def test_civitai_model_version_and_by_hash_shapes():
    version = normalise_metadata("civitai", fixture("civitai/model_version.json"))
    assert version["title"] == "Inkwash Heroine Style" and version["version_name"] == "v2.0"
    assert version["model_type"] == "LORA" and version["base_model"] == "SDXL 1.0"
    assert version["air"] == "urn:air:sdxl:lora:civitai:913572@1184630"
    assert version["file"]["sha256"].startswith("5aa7e63d") and version["file"]["fp"] == "fp16"
    # no model permissions in a bare version body: only the base model's licence is known
    assert version["license"] is None and version["license_terms"]["source"] == "base-model"
    assert version["license_terms"]["base_model_license"] == "openrail++"
    assert version["license_terms"]["commercial_use"] is None
    by_hash = normalise_metadata("civitai", fixture("civitai/by_hash.json"))
    assert by_hash["version_id"] == 1021947 and by_hash["description"] is None
    assert by_hash["file"]["sha256"] == "49f1527441d0d29bf9bc874ebeb8033cb5ccf850f80ab55e57db3417e90bd4f5"


def test_civitai_files_entry_on_its_own():
    entry = fixture("civitai/model_version.json")["files"][1]
    meta = normalise_metadata("civitai", entry)
    assert meta["file"]["name"] == "inkwashHeroine_v20_trainingData.zip"
    assert meta["file"]["hashes"]["CRC32"] == "12DDFAB2" and "AutoV1" not in meta["file"]["hashes"]


@pytest.mark.parametrize("value, expected", [
    ("Sell", ["Image", "RentCivit", "Rent", "Sell"]),  # Civitai's migration ladder
    ("Rent", ["Image", "RentCivit", "Rent"]),
    ("Image", ["Image"]),
    ("None", []),
    (["Image", "RentCivit"], ["Image", "RentCivit"]),
    ("{Image,RentCivit}", ["Image", "RentCivit"]),
    (["{Image,RentCivit,Rent}"], ["Image", "RentCivit", "Rent"]),
    ([], []),
    (None, None),
])
def test_allow_commercial_use_in_all_its_forms(value, expected):
    assert commercial_use(value) == expected
    raw = copy.deepcopy(fixture("civitai/model.json"))
    raw["allowCommercialUse"] = value
    assert normalise_metadata("civitai", raw)["license_terms"]["allow_commercial_use"] == expected


def test_civitai_string_booleans_and_a_persons_licence_override():
    raw = fixture("civitai/model.json")
    raw.update(allowDerivatives="False", allowNoCredit="0", license="creativeml-openrail-m")
    meta = normalise_metadata("civitai", raw)
    assert meta["license_terms"]["allow_derivatives"] is False
    assert meta["license_terms"]["allow_no_credit"] is False
    assert meta["license"] == "creativeml-openrail-m" and meta["base_model"] == "SDXL 1.0"


def test_civitai_hand_written_metadata_is_mapped_generically():
    meta = normalise_metadata("civitai", {"name": "My LoRA", "tags": "style, Ink", "nsfw": "False",
                                          "baseModel": "Pony", "character": "aya"})
    assert meta["title"] == "My LoRA" and meta["tags"] == ["style", "ink"] and meta["nsfw"] is False
    assert meta["base_model"] == "Pony" and meta["license"] is None


# ---------------------------------------------------------------------------- huggingface
def test_huggingface_model_info_with_card_data():
    meta = normalise_metadata("huggingface", fixture("huggingface/model_info.json"),
                              filename="inkwash_style_xl.safetensors")
    assert meta["title"] == "fixture-lab/inkwash-style-lora-xl" and meta["author"] == "fixture-lab"
    assert meta["license"] == "openrail++" and meta["gated"] is False
    assert meta["tags"] == ["text-to-image", "lora", "diffusers", "template:sd-lora"]
    assert not any(t.startswith(("license:", "region:", "base_model:")) for t in meta["tags"])
    assert meta["base_model"] == "fixture-lab/base-diffusion-xl"
    assert meta["trained_words"] == ["inkwash heroine"] and meta["revision"].startswith("f3fb0dd9")
    assert meta["file"] == {"name": "inkwash_style_xl.safetensors", "size": 4718613, "lfs": True,
                            "sha256": "b22bf75fe033635108ca7e75a809cbbb5ece93e5642afa9895ee619dbb5f585c",
                            "blob_id": "6ecddd814122f3597ffa034b226021214bebd78a"}
    plain = normalise_metadata("huggingface", fixture("huggingface/model_info.json"), filename="README.md")
    assert plain["file"]["sha256"] is None and plain["file"]["lfs"] is False  # a git sha1 is no sha256


def test_huggingface_gated_model_and_other_licence():
    meta = normalise_metadata("huggingface", fixture("huggingface/model_info_gated.json"))
    assert meta["gated"] == "manual"
    assert meta["license"] == "fixture-community-license"
    assert meta["license_terms"]["license_name"] == "fixture-community-license"
    assert meta["license_terms"]["license_link"] == "LICENSE.md"
    assert meta["license_terms"]["commercial_use"] is None  # an unknown licence settles nothing
    assert meta["file"] is None  # siblings without blobs carry no hashes


@pytest.mark.parametrize("gated, expected", [(False, False), ("auto", "auto"), ("manual", "manual"),
                                             ("false", False), ("False", False), (True, True)])
def test_huggingface_gated_forms(gated, expected):
    raw = fixture("huggingface/model_info.json")
    raw["gated"] = gated
    assert normalise_metadata("huggingface", raw)["gated"] == expected


def test_huggingface_licence_from_hub_tags_when_the_card_has_none():
    raw = fixture("huggingface/model_info.json")
    del raw["cardData"]["license"]
    raw["tags"].append("not-for-all-audiences")
    meta = normalise_metadata("huggingface", raw)
    assert meta["license"] == "openrail++" and meta["nsfw"] is True


# ---------------------------------------------------------------------------- furaffinity, generic
def test_furaffinity_submission():
    raw = {"title": "Heroine study", "description": "<b>ink</b> sketch", "name": "Fixture Artist",
           "profile_name": "fixtureartist", "link": "https://www.furaffinity.net/view/123/",
           "download": "https://d.furaffinity.net/art/fixtureartist/1/1.heroine.png",
           "rating": "Mature", "keywords": ["ink", "Heroine"], "category": "Artwork (Digital)"}
    meta = normalise_metadata("furaffinity", raw)
    assert meta["title"] == "Heroine study" and meta["author"] == "fixtureartist"
    assert meta["tags"] == ["ink", "heroine"] and meta["nsfw"] is True and meta["rating"] == "Mature"
    assert meta["description"] == "ink sketch" and meta["file"]["name"] == "1.heroine.png"
    assert normalise_metadata("furaffinity", {**raw, "rating": "General"})["nsfw"] is False


def test_generic_metadata_tags_string_false_strings_and_custom_keys():
    meta = normalise_metadata("generic", {"title": "Sky", "tags": " Sky,  night ,sky,", "nsfw": "False",
                                          "licence": "CC0", "pose": "standing"})
    assert meta["tags"] == ["sky", "night"] and meta["nsfw"] is False
    assert meta["license"] == "cc0-1.0" and meta["pose"] == "standing"
    assert meta["license_terms"]["source"] == "user" and meta["license_terms"]["credit_required"] is False
    assert normalise_metadata("local", {"nsfw": "0"})["nsfw"] is False
    assert normalise_metadata("local", None)["tags"] == []
    with pytest.raises(ValueError, match="unknown provider"):
        normalise_metadata("myspace", {})
    with pytest.raises(ValueError, match="JSON object"):
        normalise_metadata("generic", ["x"])


@pytest.mark.parametrize("text, expected", [("false", False), ("False", False), ("0", False), ("no", False),
                                            ("true", True), ("1", True), (0, False), (None, None)])
def test_to_bool(text, expected):
    assert to_bool(text) is expected


def test_merge_metadata_lets_a_person_override_and_unites_tags():
    api = normalise_metadata("civitai", fixture("civitai/model_version.json"))
    mine = normalise_metadata("civitai", {"title": "Renamed", "tags": "mine", "license": "cc-by-4.0"})
    merged = merge_metadata(api, mine)
    assert merged["title"] == "Renamed" and merged["license"] == "cc-by-4.0"
    assert merged["base_model"] == "SDXL 1.0" and "mine" in merged["tags"]


# ---------------------------------------------------------------------------- allowlist
@pytest.mark.parametrize("provider, host, ok", [
    ("civitai", "civitai.com", True),
    ("civitai", "image.civitai.com", True),
    ("civitai", "civitai-delivery-worker-prod.5ac0637cfd0766c97916cefa3764fbdf.r2.cloudflarestorage.com", True),
    ("civitai", "civitai-delivery-worker-prod.a.b.r2.cloudflarestorage.com", False),  # * is one label
    ("civitai", "civitai.com.evil.example", False),
    ("civitai", "huggingface.co", False),
    ("huggingface", "huggingface.co", True),
    ("huggingface", "cas-bridge.xethub.hf.co", True),
    ("huggingface", "cdn-lfs.huggingface.co", True),
    ("huggingface", "cdn-lfs-us-1.huggingface.co", True),
    ("huggingface", "cdn-lfs-us-1.hf.co", True),
    ("huggingface", "us.aws.cdn.hf.co", True),
    ("huggingface", "evil.hf.co", False),
    ("huggingface", "HUGGINGFACE.CO.", True),
    ("generic", "example.com", False),
])
def test_builtin_allowlist(ws, provider, host, ok):
    assert is_host_allowed(host, provider, ws) is ok


def test_allowlist_extends_from_config(ws):
    assert not is_host_allowed("127.0.0.1", "civitai", ws)
    update_config({"ingest": {"extra_allowed_hosts": ["127.0.0.1:8765"],
                              "providers": {"huggingface": {"base_url": "http://localhost:9999"},
                                            "generic": {"allowed_hosts": ["*.example.org"]}}}}, ws)
    assert is_host_allowed("127.0.0.1", "civitai", ws)
    assert is_host_allowed("localhost", "huggingface", ws) and not is_host_allowed("localhost", "civitai", ws)
    assert is_host_allowed("cdn.example.org", "generic", ws) and not is_host_allowed("example.org", "generic", ws)
    assert "civitai.com" in allowed_host_patterns("civitai", ws)


def test_every_provider_has_an_allowlist_entry_and_urls_map_to_providers():
    assert set(_REMOTE_ALLOWLIST) == {"civitai", "huggingface", "furaffinity", "generic"}
    assert provider_for_url("https://civitai.com/api/download/models/1") == "civitai"
    assert provider_for_url("https://huggingface.co/a/b/resolve/main/x") == "huggingface"
    assert provider_for_url("https://d.furaffinity.net/art/x.png") == "furaffinity"
    assert provider_for_url("https://example.com/x") is None
    assert host_matches("cdn-lfs.hf.co", "cdn-lfs*.hf.co") and not host_matches("x.cdn-lfs.hf.co", "cdn-lfs*.hf.co")


def test_description_html_keeps_headings_list_items_and_cells_apart_and_drops_scripts():
    html_text = ("<h3>Settings</h3><ul><li><p>pp</p></li><li>storybook</li></ul><table><tr><td>Strength:</td>"
                 "<td>0.8</td></tr></table><p>Tip&amp;trick<br>next</p><script>alert(1)</script>"
                 "<p><img src='https://image.civitai.com/x.jpeg'></p><style>p{}</style>")
    meta = normalise_metadata("civitai", {**fixture("civitai/model.json"), "description": html_text})
    assert meta["description"].splitlines() == ["Settings", "- pp", "- storybook", "Strength: 0.8", "Tip&trick",
                                                "next"]


def test_version_level_creator_is_the_author_when_no_model_names_one():
    raw = {**fixture("civitai/model_version.json"), "creator": {"username": "version_author"}}
    assert normalise_metadata("civitai", raw)["author"] == "version_author"


def test_partial_expand_body_from_hugging_face_still_names_the_repo():
    meta = normalise_metadata("huggingface", {"_id": "x", "id": "org/name", "xetEnabled": False})
    assert meta["title"] == "org/name" and meta["source_url"] == "https://huggingface.co/org/name"
    assert meta["gated"] is None and meta["nsfw"] is None  # a partial body does not say

"""Real Civitai and Hugging Face answers (tests/fixtures/providers/real/, see SOURCES.md), read
the way a careful person reads them: every expected value below was read off the payload by
hand (sizes are the published ``sizeKB * 1024``, rounded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from comfyvn.ingest.errors import RemoteError
from comfyvn.ingest.mappers import normalise_metadata
from comfyvn.ingest.providers import civitai, huggingface
from comfyvn.rights import base_model_license

REAL = Path(__file__).parent / "fixtures" / "providers" / "real"
OPENRAIL_M = "creativeml-openrail-m"


def load(name: str) -> dict:
    return json.loads((REAL / name).read_text(encoding="utf-8"))


def terms(commercial, credit, derivatives, relicense, base=OPENRAIL_M, source="provider"):
    return {"commercial_use": commercial, "credit_required": credit, "derivatives_allowed": derivatives,
            "relicense_allowed": relicense, "source": source, "base_model_license": base}


def civ(title, creator, kind, base, model_id, version_id, version, words, tags, rights, nsfw, file, size, sha):
    return {"title": title, "author": creator, "kind": kind, "base_model": base, "model_id": model_id,
            "version_id": version_id, "version_name": version, "trained_words": words, "tags": tags,
            "terms": rights, "nsfw": nsfw, "file": file, "size": size, "sha256": sha.lower(),
            "source_url": f"https://civitai.com/models/{model_id}?modelVersionId={version_id}"}


CKPT = ("checkpoint", "checkpoints")
EMB = ("embedding", "embeddings")
CIVITAI = {
    "model-1102-apiref.json": civ(
        "SynthwavePunk", "justmaier", CKPT, "SD 1.5", 1102, 1144, "V2", ["snthwve style", "nvinkpunk"],
        ["punk", "synthwave", "style"], terms("sell", False, True, True), False, "synthwavepunk_v2.ckpt",
        2132674738, "DC4C67171E2EB64B1A79DA7FDE1CB3FCBEF65364B12C8F5E30A0141FD8C88233"),
    "model-12606-checkpoint-2024.json": civ(
        "MeinaHentai", "Meina", CKPT, "SD 1.5", 12606, 100675, "V4", [],
        ["anime", "sexy", "inpainting", "base model", "naked", "nudes", "sex", "breasts", "erotic pose", "girls",
         "hentai"], terms("rent-civit", True, True, True), True, "meinahentai_v4.safetensors", 2132651874,
        "814510497782AF7B2ED8B7CFCD9C4011A2AD9E93DDC0EE00B7041A53209FF45A"),
    "model-3036-wiki-2023.json": civ(
        "CharTurner - Character Turnaround helper for 1.5 AND 2.1!", "mousewrites", EMB, "SD 2.1", 3036, 9857,
        "CharTurner V2 - For 2.1", ["21charturnerv2"], ["character", "consistent character", "turnaround",
                                                       "model sheet"],
        terms("rent", False, True, True, base="openrail++"), False, "21charturnerv2.pt", 17426,
        "F253ABB016C22DD426D6E482F4F8C3960766DE6E4C02F151478BFB98F6985383"),
    "model-36520-checkpoint-2024.json": civ(
        "GhostMix", "_GhostInShell_", CKPT, "SD 1.5", 36520, 76907, "v2.0-BakedVAE", [],
        ["anime", "photorealistic", "female", "base model", "art style", "game character", "girls", "portraits",
         "realistic"], terms("rent", True, False, False), True, "ghostmix_v20Bakedvae.safetensors", 2400065384,
        "E3EDB8A26F44DFDDC124129004B5DED3378BE974B8D3BF82F43B9660D416D3D1"),
    "model-4201-checkpoint-2024.json": civ(
        "Realistic Vision V6.0 B1", "SG_161222", CKPT, "SD 1.5 Hyper", 4201, 501240, "V5.1 Hyper (VAE)", [],
        ["photorealistic", "anatomical", "base model", "cgi", "realistic", "semi-realistic"],
        terms("rent", True, True, False), True, "realisticVisionV60B1_v51HyperVAE.safetensors", 2132625894,
        "F47E942AD4C30D863AD7F53CB60145FFCD2118845DFA705CE8BD6B42E90C4A13"),
    "model-43331-checkpoint-2024.json": civ(
        "majicMIX realistic 麦橘写实", "Merjic", CKPT, "SD 1.5", 43331, 176425, "v7", [],
        ["base model", "asian", "realistic", "photoralistic"], terms("image", False, True, True), True,
        "majicmixRealistic_v7.safetensors", 2132625894,
        "7C819B6D13663ED720C2254F4FE18373107DFEF2448D337913C8FC545640881E"),
    "model-4384-checkpoint-2024.json": civ(
        "DreamShaper", "Lykon", CKPT, "SD 1.5", 4384, 128713, "8", [],
        ["anime", "landscapes", "3d", "photorealistic", "inpainting", "digital art", "scifi", "base model",
         "fantasy art", "art style", "paintings", "woman", "illustration", "2d", "digital illustration", "fantasy",
         "girls", "portraits", "realistic", "video game"], terms("rent", False, True, True), True,
        "dreamshaper_8.safetensors", 2132625894, "879DB523C30D3B9017143D56705015E15A2CB5628762C11D086FED9538ABD7FD"),
    "model-4468-checkpoint-2024.json": civ(
        "Counterfeit-V3.0", "rqdwdw", CKPT, "SD 1.5", 4468, 57618, "v3.0", ["girl"], ["anime", "base model"],
        terms("rent-civit", False, True, True), True, "counterfeitV30_v30.safetensors", 4244124028,
        "CBFBA64E662370F59D4AA2AA69BF16749FCE93846CCCE20506AEE5DF01169859"),  # the primary fp16 twin
    "model-4514-wiki-2023.json": civ(
        "Pure Eros Face", "FapMagi", EMB, "SD 1.5", 4514, 5119, "PureErosFace_v1", ["pureerosface_v1"],
        ["girl", "person", "photorealistic", "textual inversion", "beauties", "asian", "kpop", "woman", "faces",
         "girls", "photography", "portraits", "realistic"], terms("rent", True, True, False), True,
        "pureerosface_v1.pt", 4011, "DEDB4322E42E360FE01775BA817BE03AC6A6C307744562BB0D6759368BC681DA"),
    "model-47274-checkpoint-2024.json": civ(
        "XXMix_9realistic", "Zyx_xx", CKPT, "SD 1.5", 47274, 102222, "v4.0", [],
        ["photorealistic", "sexy", "female", "style", "woman", "girls", "realistic"],
        terms("none", False, True, True), True, "xxmix9realistic_v40.safetensors", 2400040320,
        "18ED2B6C48FDA400330E5DEC9E6F4D714EF664869EA8D4021F12BA699B31DA06"),
    "model-6755-checkpoint-2024.json": civ(
        "Cetus-Mix", "Eagelaxis", CKPT, "SD 1.5", 6755, 105924, "CetusMix_WhaleFall2", [],
        ["anime", "base model", "2d", "2.5d", "basemodel", "styles", "eagelaxis"],
        terms("none", False, True, True), True, "cetusMix_Whalefall2.safetensors", 3851762130,
        "876B4C7BA57DA81D03117816B90BF8DE409CB4CECB8DE8AF56CA32EECFA6DD24"),
    "model-7240-checkpoint-2024.json": civ(
        "MeinaMix", "Meina", CKPT, "SD 1.5", 7240, 119057, "Meina V11", [],
        ["anime", "sexy", "female", "inpainting", "mix", "base model", "model", "illustration", "2d", "artstyle",
         "portraits", "semi-realistic", "landscape", "styles"], terms("rent-civit", True, True, True), True,
        "meinamix_meinaV11.safetensors", 2132651818,
        "54EF3E3610EEE7F0F6C9F9B82EEE26AA404598512D800494D1DB344E3BC560B1"),
    "model-7371-checkpoint-2024.json": civ(
        "ReV Animated", "Zovya", CKPT, "SD 1.5", 7371, 425083, "V2 Rebirth", [],
        ["anime", "base model", "illustration", "cartoon", "fantasy", "portraits"],
        terms("rent-civit", True, True, False), True, "revAnimated_v2Rebirth.safetensors", 4244098718,
        "8463CA640534D0A73B9EE97C4CC50005DBA1274324BB6A9A9DEC39A13202BDED"),
    "model-8109-wiki-2023.json": civ(
        "Ulzzang-6500 (Korean doll aesthetic)", "festival", EMB, "SD 1.4", 8109, 10107, "v1.1",
        ["ulzzang-6500-v1.1"], ["girl", "person", "photorealistic", "sexy", "female", "textual inversion", "asian",
                                "ulzzang", "woman", "embedding", "faces", "girls", "korean", "portraits",
                                "realistic"], terms("rent", False, True, True), True, "ulzzang-6500-v1.1.bin",
        10185, "8C1AF299C7E8C2283892A7AD61A5FE5574E88C9C2EE77CD0CDFC0615155FA315"),
    # bare version bodies: no model permissions, creator or tags in them
    "model-version-1318-apiref.json": civ(
        "froggy style", None, CKPT, "SD 1.5", 1244, 1318, "toad", ["ttdddd"], [],
        terms(None, None, None, None, source="base-model"), False, "froggyStyle_toad.ckpt", 2607528931,
        "0DF040C8CD48125174B54C251A87822E8ED61D529A92C42C1FA1BEF483B10B0D"),
    "model-version-1421739-helper-2025.json": civ(
        "(IL+Pony) Rear Naked Choke / 裸絞め", None, ("lora", "loras"), "Illustrious", 902206, 1421739, "IL_v1.0",
        ["choke hold \\(rnc\\)"], [], terms(None, None, None, None, base=None, source=None), True,
        "choke_hold_rnc_ilxl.safetensors", 170550436,
        "B76A1FC247DB893BC8C1290420F0E96B6F86129576A9FB885C20CB7EDBEFEEA5"),
}


def hf(title, author, licence, rights, gated, nsfw, file=None, base=None, kind=("model", "models")):
    return {"title": title, "author": author, "license": licence, "terms": rights, "gated": gated, "nsfw": nsfw,
            "file": file, "base_model": base, "kind": kind,
            "source_url": f"https://huggingface.co/{title}"}


def hf_terms(commercial, credit, derivatives, relicense, base=None):
    return terms(commercial, credit, derivatives, relicense, base=base)


HUGGINGFACE = {
    "model-deepset-roberta-base-squad2.json": hf(
        "deepset/roberta-base-squad2", "deepset", "cc-by-4.0", hf_terms("sell", True, True, True), False, False,
        file="model.safetensors", base="FacebookAI/roberta-base"),
    "model-google-bert-bert-base-uncased.json": hf(
        "google-bert/bert-base-uncased", "google-bert", "apache-2.0", hf_terms("sell", True, True, True), False,
        False, file="model.safetensors"),
    "model-sentence-transformers-paraphrase-albert-small-v2.json": hf(
        "sentence-transformers/paraphrase-albert-small-v2", "sentence-transformers", "apache-2.0",
        hf_terms("sell", True, True, True), False, False, file="model.safetensors"),
    "model-stabilityai-stable-diffusion-2-1.json": hf(
        "stabilityai/stable-diffusion-2-1", "stabilityai", "openrail++", hf_terms("sell", None, True, False), False,
        False, file="v2-1_768-ema-pruned.safetensors"),
    # ?expand= partial bodies: only the id is known, nothing about licence, gating or content
    "model-flux1-dev-expand.json": hf("black-forest-labs/FLUX.1-dev", "black-forest-labs", None,
                                      terms(None, None, None, None, base=None, source=None), None, None, kind=None),
    "model-sdxl-base-expand.json": hf("stabilityai/stable-diffusion-xl-base-1.0", "stabilityai", None,
                                      terms(None, None, None, None, base=None, source=None), None, None, kind=None),
    "space-expand-xetEnabled.json": hf("user/tmp_test_space", "user", None,
                                       terms(None, None, None, None, base=None, source=None), None, None, kind=None),
}
ERROR_BODIES = {"huggingface/error-repo-exists.json": "huggingface"}
HEADERS = {"huggingface/redirect-bert-base-uncased.json"}


def test_every_real_payload_is_listed_with_its_source_and_checked_here():
    files = {str(p.relative_to(REAL)) for p in REAL.rglob("*.json")}
    checked = ({f"civitai/{n}" for n in CIVITAI} | {f"huggingface/{n}" for n in HUGGINGFACE} | set(ERROR_BODIES)
               | HEADERS)
    assert files == checked
    sources = (REAL / "SOURCES.md").read_text(encoding="utf-8")
    for name in files:
        line = next(x for x in sources.splitlines() if x.startswith(f"| {name} |"))
        assert len(line.split(" | ")[3]) == 40  # a commit, 40 hex
    assert len(CIVITAI) >= 15 and len(HUGGINGFACE) + len(ERROR_BODIES) + len(HEADERS) >= 8


@pytest.mark.parametrize("name", sorted(CIVITAI))
def test_real_civitai_payload_reads_right(name):
    want = CIVITAI[name]
    meta = normalise_metadata("civitai", load(f"civitai/{name}"))
    got = {"title": meta["title"], "author": meta["author"], "kind": (meta.get("asset_type"), meta.get("folder")),
           "base_model": meta["base_model"], "model_id": meta["model_id"], "version_id": meta["version_id"],
           "version_name": meta["version_name"], "trained_words": meta["trained_words"], "tags": meta["tags"],
           "terms": {k: meta["license_terms"][k] for k in want["terms"]}, "nsfw": meta["nsfw"],
           "file": meta["file"]["name"], "size": meta["file"]["size"], "sha256": meta["file"]["sha256"],
           "source_url": meta["source_url"]}
    assert got == want
    assert meta["license"] is None  # Civitai names no licence; the terms say what is allowed
    assert meta["description"] is None or not re.search(r"<\s*/?[a-zA-Z][^>]*>", meta["description"])


@pytest.mark.parametrize("name", sorted(HUGGINGFACE))
def test_real_huggingface_payload_reads_right(name):
    want = HUGGINGFACE[name]
    meta = normalise_metadata("huggingface", load(f"huggingface/{name}"), filename=want["file"])
    got = {"title": meta["title"], "author": meta["author"], "license": meta["license"],
           "terms": {k: meta["license_terms"][k] for k in want["terms"]}, "gated": meta["gated"],
           "nsfw": meta["nsfw"], "file": (meta["file"] or {}).get("name"), "base_model": meta["base_model"],
           "kind": meta.get("asset_type") and (meta["asset_type"], meta["folder"]),
           "source_url": meta["source_url"]}
    assert got == want


@pytest.mark.parametrize("name, provider", sorted(ERROR_BODIES.items()))
def test_error_bodies_are_errors_not_metadata(name, provider):
    with pytest.raises(ValueError, match="error"):
        normalise_metadata(provider, load(name))


def test_same_named_twins_resolve_to_the_primary_file():
    # Counterfeit v3.0: fp32 (not primary) listed before the primary fp16 file of the same name
    raw = load("civitai/model-4468-checkpoint-2024.json")
    meta = normalise_metadata("civitai", raw, filename="counterfeitV30_v30.safetensors")
    assert (meta["file"]["fp"], meta["file"]["primary"], meta["file"]["size"]) == ("fp16", True, 4244124028)
    # Realistic Vision V5.1 Hyper-Inpaint: the full twin first, the primary pruned one second
    meta = normalise_metadata("civitai", load("civitai/model-4201-checkpoint-2024.json"), version_id=501286,
                              filename="realisticVisionV60B1_v51HyperInpaintVAE.safetensors")
    assert (meta["file"]["size_variant"], meta["file"]["primary"]) == ("pruned", True)
    assert meta["file"]["size"] == 2132679948  # 2082695.26171875 KiB


def test_old_single_value_commercial_use_climbs_the_ladder():
    meta = normalise_metadata("civitai", load("civitai/model-3036-wiki-2023.json"))
    assert meta["license_terms"]["allow_commercial_use"] == ["Image", "RentCivit", "Rent"]
    sell = normalise_metadata("civitai", load("civitai/model-1102-apiref.json"))
    assert sell["license_terms"]["allow_commercial_use"] == ["Image", "RentCivit", "Rent", "Sell"]


def test_real_descriptions_keep_paragraphs_and_list_items_apart():
    meta = normalise_metadata("civitai", load("civitai/model-3036-wiki-2023.json"))
    lines = meta["description"].splitlines()
    assert lines[0] == "CharTurner"  # the <h1>, on its own line
    assert "- Sampler: I use DPM++ 2m Karras or DDIM most often." in lines
    assert "- Highres. fix ON for best results" in lines
    majic = normalise_metadata("civitai", load("civitai/model-43331-checkpoint-2024.json"))["description"]
    assert "Steps: 20~40" in majic.splitlines() and "image.civitai.com" not in majic  # the <img> is dropped


def test_version_body_with_merged_model_reads_licence_creator_and_tags():
    """What the planner hands the mapper: the version body with /models/{modelId} merged in."""
    model = load("civitai/model-4468-checkpoint-2024.json")
    version = {**model["modelVersions"][0], "modelId": 4468}
    meta = normalise_metadata("civitai", civitai.merge_model(version, model),
                              sha256=CIVITAI["model-4468-checkpoint-2024.json"]["sha256"])
    assert meta["author"] == "rqdwdw" and meta["tags"] == ["anime", "base model"]
    assert meta["license_terms"]["commercial_use"] == "rent-civit" and meta["license_terms"]["source"] == "provider"
    assert meta["nsfw"] is True and meta["nsfw_level"] == 7


def test_api_civitai_com_references_are_civitai():
    ref = civitai.parse_reference("https://api.civitai.com/api/download/models/51852", None, None)
    assert ref["version_id"] == 51852
    assert civitai.rebase("https://api.civitai.com/api/download/models/51852", "http://127.0.0.1:1").endswith(
        "/api/download/models/51852")


def test_repo_ids_without_an_organisation_are_model_repos():
    redirect = load("huggingface/redirect-bert-base-uncased.json")
    assert redirect["status"] == 307 and redirect["headers"]["Location"].endswith("/google-bert/bert-base-uncased")
    assert huggingface.parse_reference("https://huggingface.co/bert-base-uncased/resolve/main/config.json",
                                       None) == ("bert-base-uncased", "main", "config.json")
    assert huggingface.parse_reference("https://huggingface.co/gpt2/blob/main/model.safetensors",
                                       None) == ("gpt2", "main", "model.safetensors")


@pytest.mark.parametrize("sha", ["A5F58EB1C3...", "A5F58EB1C3", "a5f58eb1c3" + "0" * 53])
def test_shortened_sha256_is_not_stored_as_a_digest(sha):
    raw = load("civitai/model-version-1318-apiref.json")
    raw["files"][0]["hashes"]["SHA256"] = sha
    meta = normalise_metadata("civitai", raw)
    assert meta["file"]["sha256"] is None and meta["file"]["hashes"]["SHA256"] == sha


@pytest.mark.parametrize("level, nsfw", [(1, False), (2, False), (3, False), (4, True), (8, True), (16, True),
                                         (31, True), (32, True)])
def test_nsfw_follows_the_nsfw_level_bits_even_when_the_boolean_says_false(level, nsfw):
    raw = load("civitai/model-1102-apiref.json")
    raw.update(nsfw=False, nsfwLevel=level)
    assert normalise_metadata("civitai", raw)["nsfw"] is nsfw


@pytest.mark.parametrize("base, licence", [
    ("SD 1.5", "creativeml-openrail-m"), ("SD 1.4", "creativeml-openrail-m"), ("SD 2.1", "openrail++"),
    ("SDXL 1.0", "openrail++"), ("Flux.1 D", "flux-1-dev-non-commercial"), ("Flux.1 S", "apache-2.0"),
    ("SD 3.5 Large", "stabilityai-community"), ("black-forest-labs/FLUX.1-schnell", "apache-2.0"),
    ("stabilityai/stable-diffusion-xl-base-1.0", "openrail++"), ("Pony", None), ("Illustrious", None)])
def test_base_model_licence_table(base, licence):
    assert base_model_license(base) == licence


@pytest.mark.parametrize("url", [
    "https://civitai.com:0/api/download/models/1", "https://civitai.com:70000/api/download/models/1",
    "https://civitai.com:abc/api/download/models/1", "https://civitai.com/models/1?x=" + "a" * 2100])
def test_bad_ports_and_overlong_urls_are_refused_before_any_request(url):
    with pytest.raises(RemoteError) as err:
        civitai.parse_reference(url, None, None)
    assert err.value.code == "remote.bad_url" and ("port" in err.value.message or "limit" in err.value.message)


def _all_versions() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((REAL / "civitai").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        out += [(f"{path.name}:{v['id']}", v) for v in doc.get("modelVersions") or [doc]]
    return out


def test_every_real_version_resolves_names_to_the_primary_twin_and_keeps_every_size():
    """134 versions, 213 files: 72 sizes are not whole bytes in the JSON, 33 versions have same-named
    twins and in 24 of them the first same-named file is not the primary one."""
    twins = rounded = 0
    for label, version in _all_versions():
        for f in version["files"]:
            meta = normalise_metadata("civitai", {**version, "modelId": 1}, filename=f["name"])
            same = [x for x in version["files"] if x["name"] == f["name"]]
            primary = next((x for x in same if x.get("primary")), same[0])
            assert meta["file"]["id"] == primary["id"], label
            by_id = normalise_metadata("civitai", {**version, "modelId": 1}, file_id=f["id"])
            assert by_id["file"]["size"] == round(f["sizeKB"] * 1024) > 0, label
            twins += len(same) > 1 and same[0] is not primary
            rounded += not float(f["sizeKB"] * 1024).is_integer()
    assert twins > 0 and rounded > 0  # the corpus really has both shapes

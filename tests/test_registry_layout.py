"""The registry split by role keeps its seed surface, and its parts import one way.

``comfyvn.studio.core.asset_registry`` is the facade at the seed's path: every name it offered
before the split is still importable from it, and ``AssetRegistry`` keeps every public method.
The parts under ``comfyvn/registry/`` never import the facade or the enforcer above it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import comfyvn.registry.rebuild as rebuild
import comfyvn.studio.core.asset_registry as facade
from comfyvn.registry.placement import Merge, RegistrationPlan
from comfyvn.studio.core.asset_registry import AssetRegistry

REGISTRY_DIR = Path(__file__).resolve().parents[1] / "comfyvn" / "registry"
# the parts behind the facade (below it) and the enforcer (above it)
PARTS = ("errors", "paths", "records", "listeners", "sidecars", "previews", "journal", "placement", "updates",
         "removal", "recovery")
ENFORCER = ("scan", "audit", "derive", "rebuild")

FACADE_NAMES = ("DERIVED_META_KEYS", "FIELD_KEYS", "INCOMING_DIR", "MAX_SIDECAR_BYTES", "PROJECT_RE",
                "RIGHTS_BOOL_FILTERS", "RIGHTS_VERSION", "SIDECAR_SUFFIX", "SORT_COLUMNS", "AssetCollisionError",
                "AssetNotFoundError", "AssetRegistry", "AssetRegistryError", "Hook", "check_project_id",
                "copy_and_hash", "decode_cursor", "encode_cursor", "log", "normalise_tags", "split_metadata")
FACADE_METHODS = ("ASSETS_ROOT", "HOOK_ASSET_META_UPDATED", "HOOK_ASSET_REGISTERED", "HOOK_ASSET_REMOVED",
                  "HOOK_EVENTS", "HOOK_SIDECAR_WRITTEN", "META_ROOT", "MODDER_TOPICS", "THUMB_ROOT", "add_hook",
                  "bulk_update_tags", "count", "db_path", "describe_hooks", "ensure_sidecar", "facets",
                  "find_by_hash", "get_asset", "iter_assets", "iter_hooks", "legacy_sidecar_path", "list_assets",
                  "meta_view", "pending_recovery", "query_assets", "read_sidecar", "recover",
                  "regenerate_thumbnails", "register_file", "register_files", "relocate_asset", "remove_asset",
                  "remove_asset_record", "remove_hook", "resolve_path", "resolve_thumbnail_path", "rewrite_sidecar",
                  "sidecar_document", "sidecar_path_for", "thumbnail_status", "to_dataframe", "update_asset_meta",
                  "wait_for_thumbnails")
REBUILD_NAMES = ("FINDING_KINDS", "LICENSE_FILE_NAMES", "MODEL_SUFFIXES", "RebuildSummary", "audit_sidecars",
                 "build_parser", "derive_license", "derive_tags", "guess_type", "license_from_file", "log", "main",
                 "rebuild_from_disk", "spdx_to_tag")


def imported_modules(module: str) -> set[str]:
    """The ``comfyvn`` modules a registry module imports (anywhere in it), as dotted names."""
    tree = ast.parse((REGISTRY_DIR / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "comfyvn.registry" if node.level == 1 else "comfyvn" if node.level == 2 else ""
            target = ".".join(p for p in (base, node.module or "") if p) if node.level else node.module or ""
            found.update(f"{target}.{alias.name}" for alias in node.names)
            found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("name", FACADE_NAMES)
def test_every_name_of_the_facade_module_still_imports(name):
    assert getattr(facade, name) is not None and name in facade.__all__


def test_asset_registry_keeps_every_public_method_and_constant():
    assert [name for name in FACADE_METHODS if not hasattr(AssetRegistry, name)] == []
    assert AssetRegistry.HOOK_EVENTS == ("asset_registered", "asset_meta_updated", "asset_removed",
                                         "asset_sidecar_written")


@pytest.mark.parametrize("name", REBUILD_NAMES)
def test_the_enforcer_entry_module_keeps_its_names(name):
    assert hasattr(rebuild, name)


@pytest.mark.parametrize("module", PARTS)
def test_the_registry_parts_never_import_the_facade_or_the_enforcer(module):
    importlib.import_module(f"comfyvn.registry.{module}")
    above = {"comfyvn.studio.core.asset_registry", *(f"comfyvn.registry.{m}" for m in ENFORCER)}
    assert imported_modules(module) & above == set()


def test_a_registration_plan_is_typed(ws, tmp_path):
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    src = tmp_path / "hero.txt"
    src.write_text("hero")
    plan = reg._placement.plan(src, "docs", tags="a, b", license_tag="cc0")
    try:
        assert isinstance(plan, RegistrationPlan) and plan.op == "copy" and plan.tmp is not None
        assert plan.merge == Merge(meta={}, tags=["a", "b"], license_tag="cc0")
        assert plan.record["path"] == "docs/hero.txt" and plan.final == reg.assets_root / "docs" / "hero.txt"
    finally:
        plan.tmp.unlink(missing_ok=True)
    assert reg.count() == 0 and not plan.final.exists()  # planning places nothing

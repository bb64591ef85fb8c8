"""Byte-identical files across library roots and the registry: a report, nothing deleted."""

from __future__ import annotations

from .roots import in_place_path


def duplicate_report(registry) -> dict:
    """``{"groups": [{"sha256", "uid", "size", "copies", "paths", "reclaimable"}], "files",
    "reclaimable_bytes"}``: every content held by more than one file (library files of any root,
    plus the registered file of an asset kept in the assets root), largest saving first."""
    pid = registry.project_id
    rows = registry.db.query(
        "SELECT f.sha256, f.uid, f.size, f.root, f.rel FROM library_files f WHERE f.project_id = ? AND"
        " f.status = 'present' AND f.sha256 IN ("
        "  SELECT sha256 FROM library_files WHERE project_id = ? AND status = 'present' GROUP BY sha256"
        "  HAVING count(*) > 1"
        "  UNION SELECT g.sha256 FROM library_files g JOIN assets a ON a.project_id = g.project_id AND a.uid = g.uid"
        "  AND a.hash = g.sha256 WHERE g.project_id = ? AND g.status = 'present' AND a.path NOT LIKE '@library/%')"
        " ORDER BY f.sha256, f.root, f.rel", (pid, pid, pid))
    groups: dict[str, dict] = {}
    for r in rows:
        group = groups.setdefault(r["sha256"], {"sha256": r["sha256"], "uid": r["uid"], "size": r["size"], "paths": []})
        group["paths"].append({"root": r["root"], "rel": r["rel"],
                               "path": in_place_path(registry.ws, f"@library/{r['root']}/{r['rel']}")})
    for group in groups.values():
        asset = registry.get_asset(group["uid"])
        if asset is not None and asset["hash"] == group["sha256"] and not asset["path"].startswith("@library/"):
            group["paths"].insert(0, {"root": None, "rel": asset["path"], "path": asset["abs_path"]})
        group["copies"] = len(group["paths"])
        group["reclaimable"] = group["size"] * (group["copies"] - 1)
    ordered = sorted((g for g in groups.values() if g["copies"] > 1), key=lambda g: (-g["reclaimable"], g["sha256"]))
    return {"project_id": registry.project_id, "groups": ordered, "files": sum(g["copies"] for g in ordered),
            "reclaimable_bytes": sum(g["reclaimable"] for g in ordered)}


__all__ = ["duplicate_report"]

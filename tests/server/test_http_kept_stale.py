"""Kept ``GET /assets`` answers (served on the event loop while nothing committed) against the
writes that could leave one stale: a kernel in another process editing, retagging, relicensing
and removing (text, tag and licence filters each read another index), and the default project
changed in the config between two requests."""

from __future__ import annotations

import json
import subprocess
import sys

from comfyvn.config import update_config
from comfyvn.studio.core.asset_registry import AssetRegistry

KERNEL = """
import sys
from comfyvn.studio.core.asset_registry import AssetRegistry
reg = AssetRegistry("default", make_thumbnails=False)
uid, step = sys.argv[1], sys.argv[2]
if step == "edit":
    reg.update_asset_meta(uid, {"title": "zebra crossing"}, add_tags=["night"], remove_tags=["day"])
elif step == "licence":
    reg.update_asset_meta(uid, license_tag="mit")
else:
    assert reg.remove_asset(uid)
"""


async def test_a_kernel_in_another_process_never_leaves_a_kept_page_stale(api, make_png, ws, subprocess_env):
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    uid = reg.register_file(make_png(), "images", tags=["day"], license_tag="cc0",
                            metadata={"title": "horse crossing"})["uid"]
    queries = {"text": {"text": "zebra"}, "old text": {"text": "horse"}, "tag": {"tags": "night"},
               "old tag": {"tags": "day"}, "licence": {"license": "mit", "tags": "night"}, "all": {}}

    async def pages() -> dict[str, list[str]]:
        out = {}
        for name, params in queries.items():
            r = await api("GET", "/assets", params={**params, "total": "true"})
            assert r.code == 200, r.body
            assert r.json["total"] == len(r.json["items"])
            out[name] = [x["uid"] for x in r.json["items"]]
        return out

    assert await pages() == await pages() == {"text": [], "old text": [uid], "tag": [], "old tag": [uid],
                                              "licence": [], "all": [uid]}  # the second answers are kept ones
    expected = {"edit": {"text": [uid], "old text": [], "tag": [uid], "old tag": [], "licence": [], "all": [uid]},
                "licence": {"text": [uid], "old text": [], "tag": [uid], "old tag": [], "licence": [uid], "all": [uid]},
                "remove": {"text": [], "old text": [], "tag": [], "old tag": [], "licence": [], "all": []}}
    for step, want in expected.items():
        subprocess.run([sys.executable, "-c", KERNEL, uid, step], env=subprocess_env, check=True, timeout=120)
        assert await pages() == want, step
        assert await pages() == want, step  # kept again, still right


async def test_the_default_project_changed_between_two_requests(api, make_png, ws):
    for project in ("alpha", "beta"):
        AssetRegistry(project, ws=ws, make_thumbnails=False).register_file(make_png(), "images",
                                                                          metadata={"title": project})
    uids = {}
    for project in ("alpha", "beta", "alpha"):
        update_config({"registry": {"default_project": project}}, ws)
        for _ in range(2):  # the second one is a kept answer
            r = await api("GET", "/assets", params={"text": "images"})
            assert r.code == 200 and r.json["project"] == project, r.body
            assert [json.dumps(x["meta"]).count(project) > 0 for x in r.json["items"]] == [True]
            uids.setdefault(project, r.json["items"][0]["uid"])
            assert r.json["items"][0]["uid"] == uids[project]

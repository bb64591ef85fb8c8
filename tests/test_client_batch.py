"""ComfyvnClient.enqueue_many against a real ``jupyter server`` process."""

from __future__ import annotations

import pytest
from live_server import live_server  # noqa: F401  (module-scoped fixture)

from comfyvn.client import BadRequest


@pytest.fixture
def api(live_server):  # noqa: F811
    with live_server.client() as client:
        yield client


def test_enqueue_many_stages_paths_and_dicts_and_reports_refusals(api, live_server):  # noqa: F811
    folder = live_server.ws.root / "incoming" / "batch"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"b{i}.bin" for i in range(3)]
    for i, path in enumerate(paths):
        path.write_bytes(f"client batch {i}".encode() * 50)
    result = api.enqueue_many([paths[0], {"source_path": paths[1], "dest_relative": "batch/"}, str(paths[2]),
                               folder / "missing.bin"], asset_type_hint="docs", metadata={"tags": ["cli"]})
    assert [j["source_path"] for j in result["jobs"]] == [str(p) for p in paths]
    assert all(j["status"] == "staged" and j["asset_type_hint"] == "docs" for j in result["jobs"])
    assert result["jobs"][1]["dest_relative"] == "batch/"
    assert [(e["index"], e["error"]) for e in result["errors"]] == [(3, "file_not_found")]
    for job in result["jobs"]:
        api.release(job["job_id"])
    with pytest.raises(BadRequest, match="remote_url"):
        api.enqueue_many([{"source_path": paths[0], "remote_url": "https://civitai.com/api/download/models/1"}])
    with pytest.raises(BadRequest, match="non-empty"):
        api.enqueue_many([])

"""Kept answers (the page cache) served on the event loop, without the worker pool, and never stale.

On SQLite a kept ``GET /assets`` page or ingest status is answered on the loop (the store's change
marker is read there without waiting); a commit by any connection sends the next request to the
pool again.  On PostgreSQL the marker is a network read, so every request goes through the pool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest
from server_helpers import Reply

from comfyvn.studio.core.asset_registry import AssetRegistry


@pytest.fixture
def busy_pool(jp_serverapp) -> Iterator[Callable[[], threading.Event]]:
    """``busy_pool()`` fills every thread of the extension's worker pool until the event it returns is set."""
    services = jp_serverapp.web_app.settings["comfyvn_services"]
    releases: list[threading.Event] = []

    def fill() -> threading.Event:
        release = threading.Event()
        releases.append(release)
        started = []
        for _ in range(services.executor._max_workers):
            running = threading.Event()
            started.append(running)
            services.executor.submit(lambda r=running: (r.set(), release.wait(30)))
        for running in started:
            assert running.wait(10), "the worker pool did not start the blocking tasks"
        return release

    yield fill
    for release in releases:
        release.set()


def on_loop(services) -> bool:
    return services.db.engine == "sqlite"


async def pending_after(task: asyncio.Future, seconds: float = 0.3) -> bool:
    await asyncio.sleep(seconds)
    return not task.done()


async def answered_with_the_pool_busy(api, busy_pool, path: str, tries: int) -> Reply | None:
    """The reply to ``GET path`` sent while every pool thread is busy, or None when it waited for the
    pool each time (a commit since the answer was kept, e.g. the server's start-up work, sends it
    there; it is kept again for the next try)."""
    for _ in range(tries):
        release = busy_pool()
        task = asyncio.ensure_future(api("GET", path))
        try:
            return await asyncio.wait_for(asyncio.shield(task), 3)
        except TimeoutError:
            pass
        finally:
            release.set()
        await task
    return None


async def test_a_kept_assets_page_is_answered_without_the_pool_and_a_commit_is_never_missed(
        api, make_png, ws, jp_serverapp, busy_pool):
    services = jp_serverapp.web_app.settings["comfyvn_services"]
    other = AssetRegistry("default", ws=ws, make_thumbnails=False)  # no thumbnail jobs committing later
    other.register_file(make_png(), "images")
    first = await api("GET", "/assets")  # made in the pool and kept
    assert first.code == 200 and len(first.json["items"]) == 1

    if on_loop(services):  # the same page while nothing committed: answered with every pool thread busy
        reply = await answered_with_the_pool_busy(api, busy_pool, "/assets", tries=3)
        assert reply is not None, "a kept page waited for the worker pool"
        assert reply.code == 200 and reply.body == first.body
        assert reply.headers["Etag"] == first.headers["Etag"]
    else:  # PostgreSQL: the marker is read over the network, in the pool
        assert await answered_with_the_pool_busy(api, busy_pool, "/assets", tries=1) is None

    # another connection commits (as a kernel would): the next answer must show it, so it waits for the pool
    release = busy_pool()
    other.register_file(make_png(), "images")
    fresh = asyncio.ensure_future(api("GET", "/assets"))
    assert await pending_after(fresh), "a page older than the last commit was answered"
    release.set()
    reply = await asyncio.wait_for(fresh, 10)
    assert reply.code == 200 and len(reply.json["items"]) == 2


async def test_a_page_never_kept_waits_for_the_pool(api, make_png, ws, busy_pool):
    AssetRegistry("default", ws=ws, make_thumbnails=False).register_file(make_png(), "images")
    await api("GET", "/assets")
    release = busy_pool()
    other_page = asyncio.ensure_future(api("GET", "/assets", params={"type": "images"}))  # another key
    assert await pending_after(other_page)
    release.set()
    reply = await asyncio.wait_for(other_page, 10)
    assert reply.code == 200 and len(reply.json["items"]) == 1


async def test_a_kept_ingest_status_is_answered_without_the_pool_with_live_rate_limits(
        api, ingest_on, ws, make_png, jp_serverapp, busy_pool):
    from comfyvn.config import update_config
    from comfyvn.ingest.queue import AssetIngestQueue

    services = jp_serverapp.web_app.settings["comfyvn_services"]
    first = await api("GET", "/api/ingest/status")  # made in the pool, its database part kept
    assert first.code == 200
    update_config({"ingest": {"rate_limit_rps": 3, "rate_limit_burst": 2}}, ws)  # no commit
    if on_loop(services):
        reply = await answered_with_the_pool_busy(api, busy_pool, "/api/ingest/status", tries=3)
        assert reply is not None, "a kept status waited for the worker pool"
        assert reply.code == 200 and reply.json["jobs"] == first.json["jobs"]
        assert reply.json["summary"]["counts"] == first.json["summary"]["counts"]
        assert reply.json["summary"]["rate_limits"]["civitai"]["rate"] == 3.0  # the config read per answer
    else:
        assert await answered_with_the_pool_busy(api, busy_pool, "/api/ingest/status", tries=1) is None

    release = busy_pool()
    job = AssetIngestQueue(ws).enqueue(source_path=str(make_png()))  # another connection commits
    fresh = asyncio.ensure_future(api("GET", "/api/ingest/status"))
    assert await pending_after(fresh), "a status older than the last commit was answered"
    release.set()
    status = (await asyncio.wait_for(fresh, 10)).json
    assert status["jobs"][0]["job_id"] == job["job_id"]
    assert status["summary"]["counts"]["staged"] == first.json["summary"]["counts"]["staged"] + 1

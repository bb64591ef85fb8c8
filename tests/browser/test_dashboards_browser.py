"""Queue inspector, hook monitor, enforcer report and the workbench in Voila, driven in Chromium."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest
from browser_helpers import ASSETS, explain_failures, open_browser, picture, voila_server
from playwright.async_api import async_playwright

from comfyvn.hooks import get_hook_bus
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.store import get_database
from comfyvn.studio.core.asset_registry import AssetRegistry

pytestmark = pytest.mark.browser

FIRST_STATUS = "document.querySelector('.cvn-table tbody tr .cvn-tchip')?.textContent"


async def wait_js(page, expr: str, timeout: float = 60.0):
    await page.wait_for_function(expr, timeout=timeout * 1000)


def run_py(env: dict, code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    return out.stdout.strip()


def test_queue_inspector_enqueue_form_to_applied(voila_env, seeded_ws, tmp_path):
    incoming = seeded_ws.root / "incoming"
    picture(incoming / "cafe_morning.png", "backgrounds", ("#ffe8d6", "#cb997e"), 50)
    for i, name in enumerate(("park_autumn", "pier_evening", "old_letter")):
        picture(incoming / f"{name}.png", "backgrounds" if i < 2 else "props", ("#dda15e", "#606c38"), 60 + i)
    queue = AssetIngestQueue(seeded_ws)

    async def scenario():
        with voila_server("queue", voila_env, tmp_path) as url:
            async with async_playwright() as pw:
                browser, context = await open_browser(pw, height=1050)
                page = await context.new_page()
                page.set_default_timeout(90_000)
                async with explain_failures(page, tmp_path):
                    await page.goto(url)
                    await page.wait_for_selector(".cvn-table")
                    assert "HTTP ingest routes: enabled" in await page.text_content(".cvn-queue")

                    # validation messages appear under the field; nothing is queued
                    await page.click(".cvn-enqueue-submit")
                    await page.wait_for_selector(".cvn-error-source_path :text('Enter the path')")
                    await page.fill(".cvn-enqueue-source input", "incoming/missing.png")
                    await page.click(".cvn-enqueue-submit")
                    await page.wait_for_selector(".cvn-error-source_path :text('does not exist')")
                    assert queue.summary()["total"] == 0

                    # enqueue from the form: staged, selected; Apply: applied
                    await page.fill(".cvn-enqueue-source input", "incoming/cafe_morning.png")
                    await page.fill(".cvn-enqueue-type input", "backgrounds")
                    await page.click(".cvn-enqueue-submit")
                    await wait_js(page, f"{FIRST_STATUS} === 'staged'")
                    [job] = queue.list_jobs()
                    assert job["status"] == "staged" and job["asset_type_hint"] == "backgrounds"
                    await page.wait_for_selector(".cvn-table tbody tr.selected")
                    await page.click(".cvn-queue-apply")
                    await wait_js(page, f"{FIRST_STATUS} === 'applied'")
                    job = queue.get(job["job_id"])
                    assert job["status"] == "applied"
                    assert AssetRegistry(ws=seeded_ws).get_asset(job["asset_uid"])["type"] == "backgrounds"
                    assert "applied as asset" in await page.text_content(".cvn-queue-results")

                    # jobs made by another process show up live (one duplicate, one staged, one released)
                    run_py(voila_env, f"""
                        from comfyvn.ingest.queue import get_ingest_queue
                        q = get_ingest_queue()
                        a = q.enqueue(source_path={str(incoming / 'park_autumn.png')!r}, asset_type_hint="backgrounds")
                        q.enqueue(source_path={str(incoming / 'park_autumn.png')!r})
                        b = q.enqueue(source_path={str(incoming / 'pier_evening.png')!r}, asset_type_hint="backgrounds")
                        q.release(b["job_id"])
                        q.enqueue(source_path={str(incoming / 'old_letter.png')!r}, asset_type_hint="props")
                    """)
                    await wait_js(page, "document.querySelectorAll('.cvn-table tbody tr').length === 5")
                    await page.click(".cvn-table tbody tr:nth-child(2)")
                    await page.wait_for_selector(".cvn-table tbody tr:nth-child(2).selected")
                    await page.wait_for_selector(".cvn-pre :text('released')")
                await browser.close()

    asyncio.run(scenario())


def test_hook_monitor_streams_filters_and_inspects(voila_env, seeded_ws, tmp_path):
    async def scenario():
        with voila_server("hooks", voila_env, tmp_path) as url:
            async with async_playwright() as pw:
                browser, context = await open_browser(pw, height=1000)
                page = await context.new_page()
                page.set_default_timeout(90_000)
                async with explain_failures(page, tmp_path):
                    await page.goto(url)
                    await page.wait_for_selector(".cvn-table tbody tr")
                    # starts from recent history: the seeding's registrations are there
                    assert await page.eval_on_selector_all(".cvn-table tbody tr", "r => r.length") >= len(ASSETS)

                    await page.select_option(".cvn-hooks-topic select", label="on_asset_registered")
                    await wait_js(page, f"document.querySelectorAll('.cvn-table tbody tr').length === {len(ASSETS)}")
                    src = picture(tmp_path / "late.png", "props", ("#000000", "#ffffff"), 77)
                    uid = run_py(voila_env, f"""
                        from comfyvn.studio.core.asset_registry import AssetRegistry
                        print(AssetRegistry().register_file({str(src)!r}, "props", tags="late")["uid"])
                    """).splitlines()[-1]
                    await wait_js(page, f"document.querySelectorAll('.cvn-table tbody tr').length === {len(ASSETS) + 1}")
                    first = page.locator(".cvn-table tbody tr").first
                    assert uid in await first.text_content()
                    await first.click()
                    await page.wait_for_selector(f".cvn-pre :text('{uid}')")

                    await page.click(".cvn-hooks-pause")
                    await page.wait_for_selector(".cvn-hooks-pause:has-text('Resume (0 new)')")
                    run_py(voila_env, """
                        from comfyvn.studio.core.asset_registry import AssetRegistry
                        r = AssetRegistry()
                        for a in r.list_assets(limit=2):
                            r.update_asset_meta(a["uid"], metadata={"reviewed": True})
                    """)
                    await wait_js(page, "/Resume \\(([1-9][0-9]*) new\\)/.test("
                                        "document.querySelector('.cvn-hooks-pause').textContent)")
                    assert await page.eval_on_selector_all(".cvn-table tbody tr", "r => r.length") == len(ASSETS) + 1
                    await page.select_option(".cvn-hooks-topic select", index=0)
                    await page.click(".cvn-hooks-pause")
                    newest = get_hook_bus(get_database(seeded_ws.db_path)).last_id()
                    await wait_js(page, "document.querySelector('.cvn-table tbody tr td').textContent"
                                        f" === '{newest}'")  # everything held while paused is shown
                    assert "on_asset_sidecar_written" in await first.text_content()
                    await first.click()
                    await page.wait_for_selector(f".cvn-hooks :text('#{newest} ·')")
                await browser.close()

    asyncio.run(scenario())


def test_enforcer_report_dry_run_then_fix(voila_env, seeded_ws, tmp_path):
    registry = AssetRegistry(ws=seeded_ws)
    recs = registry.list_assets(limit=10)
    registry.sidecar_path_for(recs[0]["path"]).unlink()
    registry.sidecar_path_for(recs[1]["path"]).write_text("{broken", "utf-8")

    async def scenario():
        with voila_server("enforcer", voila_env, tmp_path) as url:
            async with async_playwright() as pw:
                browser, context = await open_browser(pw, height=900)
                page = await context.new_page()
                page.set_default_timeout(90_000)
                async with explain_failures(page, tmp_path):
                    await page.goto(url)
                    await page.wait_for_selector(".cvn-bars")
                    chart = await page.text_content(".cvn-bars")
                    assert "Missing sidecar" in chart and "Invalid sidecar" in chart and "Missing licence" in chart
                    assert not registry.sidecar_path_for(recs[0]["path"]).exists()  # a dry run

                    await page.click(".cvn-enforcer-overwrite input")
                    await page.click(".cvn-enforcer-fix")
                    await page.wait_for_selector(".cvn-confirm :text('write 1 missing sidecar')")
                    await page.click(".cvn-enforcer-confirm")
                    await page.wait_for_selector(".cvn-status .cvn-msg.ok")
                    deadline = time.monotonic() + 10
                    while not registry.sidecar_path_for(recs[0]["path"]).exists():
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.1)
                    assert registry.read_sidecar(recs[1]["uid"])["uid"] == recs[1]["uid"]
                    chart = await page.text_content(".cvn-bars")
                    assert "Missing sidecar" not in chart and "Invalid sidecar" not in chart
                await browser.close()

    asyncio.run(scenario())


def test_workbench_shows_the_four_dashboards_in_tabs(voila_env, seeded_ws, tmp_path):
    async def scenario():
        with voila_server("workbench", voila_env, tmp_path) as url:
            async with async_playwright() as pw:
                browser, context = await open_browser(pw, height=1100)
                page = await context.new_page()
                page.set_default_timeout(90_000)
                async with explain_failures(page, tmp_path):
                    await page.goto(url)
                    await page.wait_for_selector(".cvn-tile img")
                    tabs = await page.eval_on_selector_all(".cvn-tab .lm-TabBar-tab", "t => t.map(x => x.textContent)")
                    assert tabs == ["Asset gallery", "Ingest queue", "Sidecar enforcer", "Hook monitor", "Licences",
                                    "Library"]
                    assert await page.query_selector(".cvn-failed") is None  # no dashboard failed to start
                    await page.wait_for_function("Array.from(document.querySelectorAll('.cvn-tile img'))"
                                                 ".filter(i => i.naturalWidth > 0).length === 8")
                    await page.click(".cvn-tab .lm-TabBar-tab:has-text('Hook monitor')")
                    await page.wait_for_selector(".cvn-hooks .cvn-table tbody tr", state="visible")
                await browser.close()

    asyncio.run(scenario())

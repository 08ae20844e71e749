"""End to end: `diffews app` in a subprocess, driven by Playwright in headless Chromium (Debian's).

Saves a screenshot to ``test-artifacts/app.png``; with ``DIFFEWS_UPDATE_SCREENSHOT=1`` also to
``docs/app-screenshot.png`` (the README's picture). Waits on DOM states with generous timeouts, so
it holds on slow shared machines.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import zipfile
from io import BytesIO
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from helpers import free_port
from PIL import Image

pytest.importorskip("gradio")
playwright_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
START_TIMEOUT_S = 240
STEP_TIMEOUT_MS = 180_000

if not CHROMIUM.is_file():
    reason = f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def app_url():
    """URL of `diffews app --model tiny-random` on a free loopback port; stopped after the module."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "diffews.cli.main", "app", "--model", "tiny-random", "--port", str(free_port())]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen = []
    try:
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                pytest.fail(f"the app did not start in {START_TIMEOUT_S} s; output:\n{''.join(seen)}")
            seen.append(line)
            if "diffews app running at " in line:
                url = line.split("running at ", 1)[1].split()[0]
                break
        assert urlparse(url).hostname == "127.0.0.1", "the app must bind to loopback by default"
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh page on the app; requests that leave the machine are blocked and recorded in ``page.outside``."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.outside = []

    def only_loopback(route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(app_url, wait_until="load", timeout=STEP_TIMEOUT_MS)
    # The status line is filled by the page's load event: from then on, a click reaches the server.
    page.locator("#model-status").get_by_text("ready").wait_for()
    assert "tiny-random" in page.locator("#model-status").inner_text()
    yield page
    context.close()


def test_segment_two_queries_in_the_browser(page, tmp_path):
    page.set_input_files("#support-image-1 input[type=file]", str(EXAMPLES / "support" / "gnome_dev_cdrom_audio_support_1.jpg"))
    page.set_input_files("#support-mask-1 input[type=file]", str(EXAMPLES / "support" / "gnome_dev_cdrom_audio_support_1_mask.png"))
    queries = [EXAMPLES / "query" / "gnome_dev_cdrom_audio_query_1.jpg", EXAMPLES / "query" / "gnome_dev_cdrom_audio_query_2.jpg"]
    page.set_input_files("#query-files input[type=file]", [str(q) for q in queries])
    # Uploads finish when the mask preview and both query files are shown.
    page.wait_for_selector("#support-mask-1 img")
    page.wait_for_selector("#support-image-1 canvas")
    page.locator("#query-files").get_by_text("gnome_dev_cdrom_audio_query_2").wait_for()

    page.click("#segment")
    page.wait_for_function("document.querySelectorAll('#overlays img').length === 2", timeout=STEP_TIMEOUT_MS)
    links = page.locator("#mask-files a")
    page.wait_for_function("document.querySelectorAll('#mask-files a').length === 2", timeout=STEP_TIMEOUT_MS)
    page.locator("#mask-zip a").wait_for()

    assert page.locator("#model-notice").inner_text().count("random weights") == 1
    captions = page.locator("#overlays").inner_text()
    assert "gnome_dev_cdrom_audio_query_1" in captions and "gnome_dev_cdrom_audio_query_2" in captions
    for i, query in enumerate(queries):
        href = links.nth(i).get_attribute("href")
        assert href.endswith(f"/{query.stem}_mask.png")
        response = page.request.get(href)
        assert response.ok
        target = tmp_path / f"{query.stem}_mask.png"
        target.write_bytes(response.body())
        mask = np.asarray(Image.open(target))
        assert mask.shape == Image.open(query).size[::-1], "masks come back at the query's size"
        assert set(np.unique(mask)) <= {0, 255}
    archive = tmp_path / "masks.zip"
    archive.write_bytes(page.request.get(page.locator("#mask-zip a").get_attribute("href")).body())
    with zipfile.ZipFile(archive) as masks:
        assert masks.namelist() == ["gnome_dev_cdrom_audio_query_1_mask.png", "gnome_dev_cdrom_audio_query_2_mask.png"]

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "app.png"), full_page=True)
    if os.environ.get("DIFFEWS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(artifacts / "app.png", ROOT / "docs" / "app-screenshot.png")
    assert page.outside == [], "the page tried to reach the internet"


def test_two_named_classes_give_label_maps_a_legend_and_a_coco_file(page, tmp_path):
    support = EXAMPLES / "support" / "gnome_dev_cdrom_audio_support_1.jpg"
    mask = EXAMPLES / "support" / "gnome_dev_cdrom_audio_support_1_mask.png"
    rest = tmp_path / "rest_mask.png"
    Image.fromarray(np.where(np.asarray(Image.open(mask).convert("L")) > 127, 0, 255).astype(np.uint8)).save(rest)
    page.get_by_text("More classes (label maps and a COCO file)").click()
    page.fill("#class-name-1 textarea, #class-name-1 input", "cd")
    page.fill("#class-name-2 textarea, #class-name-2 input", "rest")
    page.set_input_files("#support-image-1 input[type=file]", str(support))
    page.set_input_files("#support-mask-1 input[type=file]", str(mask))
    page.set_input_files("#support-image-2-1 input[type=file]", str(support))
    page.set_input_files("#support-mask-2-1 input[type=file]", str(rest))
    page.set_input_files("#query-files input[type=file]", str(EXAMPLES / "query" / "gnome_dev_cdrom_audio_query_1.jpg"))
    for selector in ("#support-mask-1 img", "#support-mask-2-1 img", "#support-image-1 canvas", "#support-image-2-1 canvas"):
        page.wait_for_selector(selector)
    page.locator("#query-files").get_by_text("gnome_dev_cdrom_audio_query_1").wait_for()

    page.click("#segment")
    page.wait_for_function("document.querySelectorAll('#overlays img').length === 1", timeout=STEP_TIMEOUT_MS)
    page.locator("#coco-file a").wait_for()
    legend = page.locator("#legend").inner_text()
    assert "cd" in legend and "rest" in legend
    href = page.locator("#mask-files a").first.get_attribute("href")
    assert href.endswith("/gnome_dev_cdrom_audio_query_1_labels.png")
    labels = np.asarray(Image.open(BytesIO(page.request.get(href).body())))
    assert labels.shape == Image.open(EXAMPLES / "query" / "gnome_dev_cdrom_audio_query_1.jpg").size[::-1]
    assert set(np.unique(labels)) <= {0, 1, 2}, "a label map: 0 = no class, then the classes in order"
    assert page.outside == []


def test_errors_show_in_the_page_without_a_stack_trace(page):
    page.click("#segment")
    toast = page.get_by_text("no support example: add at least one image with its mask (uploaded or painted)")
    toast.wait_for()
    assert "Traceback" not in page.content()
    assert page.outside == []


def test_the_shipped_example_fills_the_inputs(page):
    page.get_by_text("Example: a held-out icon class (shipped images)").wait_for()
    page.locator(".gallery-item, tbody tr").first.click()
    page.locator("#query-files").get_by_text("gnome_dev_cdrom_audio_query_3").wait_for()
    page.wait_for_selector("#support-mask-1 img")
    page.get_by_role("tab", name="Example 2").click()
    page.wait_for_selector("#support-mask-2 img")
    page.click("#segment")
    page.wait_for_function("document.querySelectorAll('#overlays img').length === 3", timeout=STEP_TIMEOUT_MS)
    assert page.outside == []

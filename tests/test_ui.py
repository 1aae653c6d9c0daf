"""The page at / and Swagger UI at /docs in a real browser: Debian's chromium driven by Playwright,
against a real uvicorn process, with every request that would leave the service refused (offline).

Marked ``browser``; skipped where no chromium is installed, unless REQUIRE_BROWSER_TESTS=1
(.ci/run sets it after installing chromium), which makes a missing browser a failure.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.harness import REPO, LiveServer, start_server, stop_server
from training.ood_inputs import render_characters

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("REQUIRE_BROWSER_TESTS") == "1":
        raise RuntimeError("REQUIRE_BROWSER_TESTS=1 but no chromium found (apt-get install chromium)")
    pytest.skip("no chromium installed (apt-get install chromium)", allow_module_level=True)

from axe_playwright_python.sync_playwright import Axe  # noqa: E402
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

KEY = "ui-test-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser: Browser, url: str, *, width: int = 1280, height: int = 900) -> tuple[Page, list[str]]:
    """A page whose requests may go to ``url`` only (anything else is aborted and recorded), and
    whose console errors are recorded too."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []

    def only_local(route: object) -> None:
        request_url = route.request.url  # type: ignore[attr-defined]
        if request_url.startswith(url) or request_url.startswith(("data:", "blob:")):
            route.continue_()  # type: ignore[attr-defined]
        else:
            problems.append(f"outside request: {request_url}")
            route.abort()  # type: ignore[attr-defined]

    page.route("**/*", only_local)
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page, problems


def draw_a_stroke(page: Page) -> None:
    box = page.locator("#pad").bounding_box()
    assert box is not None
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + 0.5 * w, y + 0.2 * h)
    page.mouse.down()
    for step in range(1, 11):  # a vertical bar: a "1"
        page.mouse.move(x + 0.5 * w, y + (0.2 + 0.06 * step) * h)
    page.mouse.up()


def canvas_brightness(page: Page, selector: str) -> float:
    return float(
        page.evaluate(
            """(selector) => {
            const canvas = document.querySelector(selector);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let sum = 0;
            for (let i = 0; i < data.length; i += 4) sum += data[i] + data[i + 1] + data[i + 2];
            return sum / (data.length / 4) / 765;
        }""",
            selector,
        )
    )


def no_accessibility_violations(page: Page) -> None:
    results = Axe().run(page)
    assert results.violations_count == 0, results.generate_report()


def test_draw_and_see_the_reconstruction_scores_latents_and_error_map(
    browser: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    page, problems = open_page(browser, live_server.url)
    page.goto(f"{live_server.url}/")
    assert page.title() == "MNIST autoencoder"
    draw_a_stroke(page)
    expect(page.locator("#mse")).not_to_have_text("–", timeout=10_000)
    mse = float(page.locator("#mse").text_content() or "nan")
    assert 0 < mse < 1
    assert float(page.locator("#percentile").text_content() or "nan") >= 0
    assert np.isfinite(float(page.locator("#novelty").text_content() or "nan")), "the decision score, shown"
    assert page.locator("#verdict").text_content() in (
        "Normal: like the training digits",
        "Anomaly: unlike the training digits (threshold 0.99)",
    )
    assert canvas_brightness(page, "#reconstruction") > 0.01, "a reconstruction was drawn"
    assert page.locator("#latents canvas").count() == 16
    assert canvas_brightness(page, "#error-map") > 0

    # an image file, uploaded: an inverted digit (black on white) is no training digit
    inverted = tmp_path / "inverted.png"
    Image.eval(Image.open(REPO / "examples" / "seven.png").convert("L"), lambda v: 255 - v).save(inverted)
    page.set_input_files("#file", str(inverted))
    expect(page.locator("#verdict")).to_have_text(
        "Anomaly: unlike the training digits (threshold 0.99)", timeout=10_000
    )

    # a real test digit: recognised as normal; its reconstruction looks like it
    page.get_by_role("button", name="MNIST test digit 7").click()
    expect(page.locator("#verdict")).to_have_text("Normal: like the training digits", timeout=10_000)

    # a letter A, rendered MNIST-style as training.ood renders letters (Pillow's own font): not a digit,
    # though the autoencoder redraws it well; the novelty head sees it
    letter = tmp_path / "A.png"
    Image.fromarray(render_characters("A", files=[])[0]).save(letter)
    page.set_input_files("#file", str(letter))
    expect(page.locator("#verdict")).to_have_text(
        "Anomaly: unlike the training digits (threshold 0.99)", timeout=10_000
    )
    assert float(page.locator("#novelty").text_content() or "nan") > 0, "more likely not a digit than a digit"

    screenshot = page.screenshot(full_page=True)
    picture = np.asarray(Image.open(io.BytesIO(screenshot)).convert("L"), dtype=np.float32)
    assert picture.std() > 20, "the screenshot is not blank"
    (tmp_path / "page.png").write_bytes(screenshot)
    no_accessibility_violations(page)
    assert problems == []

    # phone width: nothing overflows sideways, the pad still draws, still accessible
    phone, problems = open_page(browser, live_server.url, width=375, height=740)
    phone.goto(f"{live_server.url}/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    draw_a_stroke(phone)
    expect(phone.locator("#mse")).not_to_have_text("–", timeout=10_000)
    no_accessibility_violations(phone)
    assert problems == []


def test_docs_render_offline(browser: Browser, live_server: LiveServer) -> None:
    page, problems = open_page(browser, live_server.url)
    page.goto(f"{live_server.url}/docs")
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    assert "MNIST autoencoder service" in (page.locator(".swagger-ui .info .title").text_content() or "")
    assert page.locator(".opblock-tag", has_text="open-inference-protocol").count() == 1
    assert [p for p in problems if p.startswith("outside request")] == []


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("keyed") / "server.log", {"MNIST_AE_API_KEY": KEY})
    yield server
    stop_server(server)


def test_the_page_asks_for_the_api_key_and_then_works(browser: Browser, keyed_server: LiveServer) -> None:
    page, _ = open_page(browser, keyed_server.url)
    page.goto(f"{keyed_server.url}/")
    draw_a_stroke(page)
    expect(page.locator("#status")).to_contain_text("API key", timeout=10_000)
    assert page.locator("#access").get_attribute("open") is not None
    page.get_by_label("Key").fill(KEY)
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("#mse")).not_to_have_text("–", timeout=10_000)
    assert page.locator("#status").text_content() == ""


def test_walk_the_latent_space_between_two_digits(browser: Browser, live_server: LiveServer, tmp_path: Path) -> None:
    """Two digits encoded, eight steps between their codes decoded in one /decode call: the strip's
    ends are the two digits' reconstructions, and the slider scrubs through it."""
    import httpx

    page, problems = open_page(browser, live_server.url)
    decodes: list[str] = []
    page.on("request", lambda request: decodes.append(request.url) if request.url.endswith("/decode") else None)
    page.goto(f"{live_server.url}/")
    page.select_option("#walk-from", label="test digit 1")
    page.select_option("#walk-to", label="test digit 7")
    page.get_by_role("button", name="Interpolate").click()
    expect(page.locator("#strip canvas")).to_have_count(8, timeout=10_000)
    assert len(decodes) == 1, "the eight steps, decoded in one call"

    def strip_pixels(index: int) -> np.ndarray:
        values = page.evaluate(
            """(k) => {
            const canvas = document.querySelectorAll("#strip canvas")[k];
            const data = canvas.getContext("2d").getImageData(0, 0, 28, 28).data;
            return Array.from({ length: 784 }, (_, i) => data[4 * i]);
        }""",
            index,
        )
        return np.asarray(values, dtype=np.float32).reshape(28, 28)

    for index, digit in ((0, 1), (7, 7)):
        pixels = np.asarray(Image.open(REPO / "service" / "static" / "ui" / "digits" / f"{digit}.png"), np.float32)
        answer = httpx.post(f"{live_server.url}/reconstruct", json={"images": [(pixels / 255).round(3).tolist()]})
        reconstruction = np.asarray(answer.json()["data"][0][0], dtype=np.float32) * 255
        assert np.abs(strip_pixels(index) - reconstruction).max() <= 1.0, f"step {index} is digit {digit} redrawn"
    assert np.abs(strip_pixels(3) - strip_pixels(0)).mean() > 5, "the steps between differ from the ends"

    page.locator("#walk-step").fill("7")
    expect(page.locator("#walk-at")).to_have_text("8 of 8")
    assert abs(canvas_brightness(page, "#walk-view") - float(strip_pixels(7).mean()) / 255) < 0.01
    page.screenshot(path=str(tmp_path / "walk.png"), full_page=True)
    no_accessibility_violations(page)
    assert problems == []

    phone, problems = open_page(browser, live_server.url, width=375, height=740)
    phone.goto(f"{live_server.url}/")
    phone.get_by_role("button", name="Interpolate").click()
    expect(phone.locator("#strip canvas")).to_have_count(8, timeout=10_000)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    no_accessibility_violations(phone)
    assert problems == []

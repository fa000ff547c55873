"""``/ui`` in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium)
loads the page from a real server process over the packaged demo model, opens the sample image, clicks, right-clicks
and drags, and the masks drawn on the page's canvas equal the SDK's masks for the same prompts.

Skipped only on a developer machine without Chromium; with ``CI`` set a missing browser is a failure (``.ci/run``
installs it). Set ``UPDATE_UI_SCREENSHOT=1`` to refresh ``docs/img/ui.png`` (the README's screenshot) as well; the
screenshot is always saved in the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from perceptra_seg import Segmentor
from perceptra_seg.utils.masks import mask_to_rle

from .helpers import server_process

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "perceptra_seg" / "assets" / "sample.png"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

if not (CHROMIUM and DRIVER) and not os.environ.get("CI"):
    pytest.skip(
        "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

if not os.environ.get("CI"):
    pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402  (on CI a missing selenium fails here instead of skipping)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

#: JavaScript: the mask layer as rows of object ids + 1 (0 = no mask), from the colours the page draws with.
_READ_MASK_LAYER = """
const canvas = document.getElementById('mask-layer');
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const palette = [[230,25,75],[60,180,75],[0,130,200],[245,130,48]];
let out = '';
for (let i = 0; i < pixels.length; i += 4) {
  if (pixels[i + 3] === 0) { out += '0'; continue; }
  // the canvas stores premultiplied alpha: colours read back may be off by a few units
  const k = palette.findIndex(([r, g, b]) => Math.abs(r - pixels[i]) + Math.abs(g - pixels[i + 1])
    + Math.abs(b - pixels[i + 2]) <= 9);
  out += String(k + 1);
}
return [canvas.width, canvas.height, out];
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM and DRIVER, "chromium and chromium-driver must be installed on CI (see .ci/run)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=900,720",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def drawn(driver: Any) -> np.ndarray:
    """The page's mask layer as ``[H, W]`` int: object id + 1 where a mask is drawn, 0 elsewhere."""
    width, height, text = driver.execute_script(_READ_MASK_LAYER)
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).reshape(height, width).astype(int) - ord("0")


def test_click_to_segment_page_draws_the_sdk_masks(browser: Any, tmp_path: Path) -> None:
    pixels = np.asarray(Image.open(SAMPLE).convert("RGB"))
    height, width = pixels.shape[:2]
    with (
        Segmentor(model="demo", device="cpu") as sdk,
        server_process({"model": {"name": "demo"}, "runtime": {"device": "cpu"}}) as base,
    ):
        browser.get(base + "/ui")
        state = "return window.perceptraUI && window.perceptraUI.state"
        wait_for(lambda: browser.execute_script(state + ".socket !== null"), "the WebSocket")
        chooser = browser.find_element(By.ID, "file")
        browser.execute_script("arguments[0].hidden = false;", chooser)
        chooser.send_keys(str(SAMPLE))
        browser.execute_script("arguments[0].hidden = true;", chooser)
        wait_for(lambda: browser.execute_script(state + ".image !== null"), "the ready message")
        canvas = browser.find_element(By.ID, "marker-layer")
        assert (canvas.size["width"], canvas.size["height"]) == (width, height)
        masks = "return window.perceptraUI.state.masksReceived"

        def offset(x: int, y: int) -> tuple[int, int]:  # Selenium offsets count from the element's centre
            return x - width // 2, y - height // 2

        # 1. left click: a foreground point of object 1
        ActionChains(browser).move_to_element_with_offset(canvas, *offset(120, 90)).click().perform()
        wait_for(lambda: browser.execute_script(masks) == 1, "the first mask")
        first = browser.execute_script(state + ".objects.get(0)")
        clicks = [(p["x"], p["y"], p["label"]) for p in first["points"]]
        assert len(clicks) == 1 and clicks[0][2] == 1
        expected = sdk.segment_from_points(pixels, clicks, output_formats=["numpy"])
        assert expected.area > 0 and np.array_equal(drawn(browser) == 1, expected.mask)

        # 2. right click: a background point refines the same object (previous logits as mask_input)
        ActionChains(browser).move_to_element_with_offset(canvas, *offset(200, 140)).context_click().perform()
        wait_for(lambda: browser.execute_script(masks) == 2, "the refined mask")
        second = browser.execute_script(state + ".objects.get(0)")
        clicks = [(p["x"], p["y"], p["label"]) for p in second["points"]]
        assert [label for _, _, label in clicks] == [1, 0]
        refined = sdk.segment_from_points(pixels, clicks, output_formats=["numpy"], mask_input=expected.low_res_logits)
        assert np.array_equal(drawn(browser) == 1, refined.mask)

        # 3. N, then drag: a box for object 2
        browser.find_element(By.TAG_NAME, "body").send_keys("n")
        ActionChains(browser).move_to_element_with_offset(canvas, *offset(280, 160)).click_and_hold().move_by_offset(
            70, 60
        ).move_by_offset(70, 70).release().perform()
        wait_for(lambda: browser.execute_script(masks) == 3, "the box mask")
        box = browser.execute_script(state + ".objects.get(1).box")
        boxed = sdk.segment_from_box(pixels, box, output_formats=["numpy"])
        layer = drawn(browser)
        assert np.array_equal(layer == 2, boxed.mask)  # drawn last, on top
        assert np.array_equal(layer == 1, refined.mask & ~boxed.mask)

        # 4. undo (U) takes the box back; the page draws object 1 alone again
        browser.find_element(By.TAG_NAME, "body").send_keys("u")
        wait_for(lambda: browser.execute_script(state + ".objects.size") == 1, "the undo")
        assert np.array_equal(drawn(browser) == 1, refined.mask)
        browser.find_element(By.TAG_NAME, "body").send_keys("e")
        wait_for(lambda: browser.execute_script(state + ".lastExport !== null"), "the export")
        assert browser.execute_script(state + ".lastExport.objects") == [0]

        # the page's RLE decoder on both COCO forms: short runs (noise) and long ones (large regions, multi-char counts)
        rng = np.random.default_rng(3)
        noise = rng.random((37, 53)) > 0.6
        block = np.zeros((300, 470), dtype=bool)
        block[20:280, 5:400] = True
        for mask in (noise, block, np.zeros((4, 5), dtype=bool), np.ones((4, 5), dtype=bool)):
            for rle in (mask_to_rle(mask), mask_to_rle(mask, compressed=False)):
                values = browser.execute_script("return Array.from(PerceptraRLE.decode(arguments[0]).data);", rle)
                assert np.array_equal(np.asarray(values, dtype=bool).reshape(mask.shape), mask)

        browser.find_element(By.TAG_NAME, "body").send_keys("2")  # select object 2: one more mask for the screenshot
        assert browser.execute_script(state + ".selected") == 1
        ActionChains(browser).move_to_element_with_offset(canvas, *offset(330, 220)).click().perform()
        wait_for(lambda: browser.execute_script(masks) == 4, "the screenshot's second mask")
        # 5. the session is lost (as after an idle close): the next action reconnects, sends the image again and
        #    re-creates each object from its clicks (without its earlier logits)
        browser.execute_script("window.perceptraUI.state.socket.close();")
        wait_for(lambda: browser.execute_script(state + ".socket === null"), "the close")
        received = browser.execute_script(masks)
        browser.find_element(By.TAG_NAME, "body").send_keys("e")
        wait_for(lambda: browser.execute_script(masks) == received + 2, "the re-created objects")
        wait_for(lambda: browser.execute_script(state + ".lastExport.objects.length") == 2, "the export")
        replayed = [browser.execute_script(state + f".objects.get({k}).points") for k in (0, 1)]
        clicks0, clicks1 = ([(p["x"], p["y"], p["label"]) for p in points] for points in replayed)
        assert len(clicks0) == 2 and len(clicks1) == 1
        again0 = sdk.segment_from_points(pixels, clicks0, output_formats=["numpy"])
        again1 = sdk.segment_from_points(pixels, clicks1, output_formats=["numpy"])
        layer = drawn(browser)
        assert np.array_equal(layer == 2, again1.mask) and np.array_equal(layer == 1, again0.mask & ~again1.mask)

        shot = tmp_path / "ui.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("UPDATE_UI_SCREENSHOT"):
            (ROOT / "docs" / "img").mkdir(exist_ok=True)
            shutil.copyfile(shot, ROOT / "docs" / "img" / "ui.png")

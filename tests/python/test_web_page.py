"""The web page in a real headless browser (Debian's chromium through chromedriver and Selenium)
against the real server on loopback: open an image, click a point and compare the mask the page
drew with the API's, pick another multimask output, drag a box, segment everything and hover.
Screenshots go to $SAMFAST_SCREENSHOTS when set (the README's come from there)."""
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import IMAGES
from test_server import png_mask, running_server

webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs python3-selenium")


@pytest.fixture(scope="module")
def server(samfast_pkg, tiny_checkpoint):
    with running_server(samfast_pkg, tiny_checkpoint) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser():
    driver_path = shutil.which("chromedriver")
    if not driver_path or not shutil.which("chromium"):
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    from selenium.webdriver.chrome.service import Service
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}; status: {driver.find_element('id', 'status').text}")


READ_MASK = """const c = window.samfast.lastMask, d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let s = ''; for (let p = 3; p < d.length; p += 4) s += d[p] > 127 ? '1' : '0'; return [c.width, c.height, s];"""


def page_mask(driver):
    w, h, bits = driver.execute_script(READ_MASK)
    return np.frombuffer(bits.encode(), np.uint8).reshape(h, w) == ord("1")


def api_predict(url, image_id, body):
    req = urllib.request.Request(f"{url}v1/images/{image_id}/predict", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def shot(driver, name):
    folder = os.environ.get("SAMFAST_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        driver.save_screenshot(os.path.join(folder, name))


def click_at(driver, x, y, shift=False, click=True):
    """A click (or only the pointer moved) at image pixel (x, y) of the displayed canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    canvas = driver.find_element("id", "view")
    w, h = driver.execute_script("return [window.samfast.width, window.samfast.height]")
    rect = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", canvas)
    dx, dy = x * rect[0] / w - rect[0] / 2, y * rect[1] / h - rect[1] / 2
    chain = ActionChains(driver)
    if shift:
        chain = chain.key_down(Keys.SHIFT)
    chain = chain.move_to_element_with_offset(canvas, int(dx), int(dy))
    if click:
        chain = chain.click()
    if shift:
        chain = chain.key_up(Keys.SHIFT)
    chain.perform()


def drag(driver, start, end):
    """A mouse drag between two image pixels of the displayed canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    canvas = driver.find_element("id", "view")
    w, h = driver.execute_script("return [window.samfast.width, window.samfast.height]")
    rw, rh = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", canvas)
    at = [(int(x * rw / w - rw / 2), int(y * rh / h - rh / 2)) for x, y in (start, end)]
    (ActionChains(driver).move_to_element_with_offset(canvas, *at[0]).click_and_hold()
     .move_to_element_with_offset(canvas, *at[1]).release().perform())


def open_page_with(driver, server, image_path):
    """The page loaded and an image file chosen in its file input."""
    driver.get(server)
    wait_for(driver, "return document.getElementById('status').textContent.includes('on cpu')")
    file_input = driver.find_element("id", "file")
    driver.execute_script("arguments[0].hidden = false", file_input)
    file_input.send_keys(str(image_path))


def press_everything(driver):
    """Clicks cleared, then segment everything on a 4x4 grid with the thresholds at 0 (random weights
    score low)."""
    driver.find_element("id", "clear").click()
    for field, value in (("pps", "4"), ("iou", "0"), ("stab", "0")):
        box = driver.find_element("id", field)
        box.clear()
        box.send_keys(value)
    driver.find_element("id", "everything").click()


def test_page_click_box_everything(server, browser, tmp_path):
    driver = browser
    open_page_with(driver, server, IMAGES / "dog.jpg")
    wait_for(driver, "return window.samfast.id && window.samfast.width === 800")
    image_id = driver.execute_script("return window.samfast.id")
    shot(driver, "page_image.png")

    # A click: the page's mask is the API's best mask for the same point.
    click_at(driver, 400, 260)
    wait_for(driver, "return window.samfast.lastMask && window.samfast.scores.length === 3")
    points = driver.execute_script("return window.samfast.points")
    assert len(points) == 1 and abs(points[0][0] - 400) < 3 and abs(points[0][1] - 260) < 3
    api = api_predict(server, image_id, {"points": points, "labels": [1], "multimask_output": True})
    best = int(np.argmax(api["scores"]))
    assert driver.execute_script("return window.samfast.chosen") == best
    assert np.array_equal(page_mask(driver), png_mask(api["masks"][best]["png"]))
    shot(driver, "page_click.png")

    # Another multimask output chosen by its radio button.
    other = (best + 1) % 3
    driver.find_elements("css selector", "#choices input")[other].click()
    assert np.array_equal(page_mask(driver), png_mask(api["masks"][other]["png"]))

    # A background click (shift) refines with two points and one mask.
    requests = driver.execute_script("return window.samfast.requests")
    click_at(driver, 150, 100, shift=True)
    wait_for(driver, f"return window.samfast.requests > {requests} && window.samfast.scores.length === 1")
    assert driver.execute_script("return window.samfast.labels") == [1, 0]

    # A dragged box: one mask, the API's for that box.
    driver.find_element("id", "clear").click()
    requests = driver.execute_script("return window.samfast.requests")
    drag(driver, (100, 100), (500, 400))
    wait_for(driver, f"return window.samfast.requests > {requests} && window.samfast.lastMask")
    box = driver.execute_script("return window.samfast.box")
    assert np.allclose(box, [100, 100, 500, 400], atol=3) and driver.execute_script("return window.samfast.points") == []
    api = api_predict(server, image_id, {"box": box, "multimask_output": False})
    assert np.array_equal(page_mask(driver), png_mask(api["masks"][0]["png"]))

    # Segment everything with the thresholds at 0 (random weights score low): one colour per record.
    press_everything(driver)
    n = wait_for(driver, "return window.samfast.records.length")
    req = urllib.request.Request(f"{server}v1/images/{image_id}/everything", headers={"content-type": "application/json"},
                                 data=json.dumps({"points_per_side": 4, "pred_iou_thresh": 0,
                                                  "stability_score_thresh": 0}).encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        assert n == len(json.loads(r.read())["records"])
    # the page's label map: the first record's pixels decoded from its COCO RLE in JavaScript
    first = driver.execute_script("""const s = window.samfast; let n = 0, at = -1;
        s.labelMap.forEach((v, p) => { if (v === 1) { n++; if (at < 0) at = p; } });
        return [n, s.records[0].area, at % s.width, Math.floor(at / s.width)];""")
    assert 0 < first[0] <= first[1]
    # hovering over one of its pixels highlights it (the pixel's centre, rounded to the screen)
    inside = driver.execute_script("""const s = window.samfast, y0 = arguments[0];
        const inside = (x, y) => { for (let j = 0; j < 9; j++) for (let i = 0; i < 9; i++)
          if (s.labelMap[(y + j) * s.width + x + i] !== 1) return false; return true; };
        for (let y = y0; y + 9 < s.height; y++) for (let x = 0; x + 9 < s.width; x++)
          if (inside(x, y)) return [x + 4.5, y + 4.5];
        return null;""", first[3])
    assert inside, "the first record has no 9x9 block to hover over"
    click_at(driver, *inside, click=False)
    wait_for(driver, "return window.samfast.hover === 0")
    shot(driver, "page_everything.png")
    assert "everything:" in driver.find_element("id", "status").text


MASK_SUMMARY = """const c = window.samfast.lastMask, d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0, sx = 0, sy = 0;
for (let p = 3, i = 0; p < d.length; p += 4, i++) if (d[p] > 127) { n++; sx += i % c.width; sy += Math.floor(i / c.width); }
return [c.width, c.height, n, sx, sy];"""


def test_page_on_a_large_photo(server, browser, tmp_path):
    """A 4000x3000 photo (12 MP, as from a phone): uploaded, clicked, its full-size mask drawn and equal
    to the API's (compared by area and pixel-coordinate sums: 12 MB of bits is too much to move through
    WebDriver), and segment everything drawn."""
    from PIL import Image
    photo = tmp_path / "photo.jpg"
    Image.open(IMAGES / "truck.jpg").convert("RGB").resize((4000, 3000), Image.BICUBIC).save(photo, quality=90)
    driver = browser
    open_page_with(driver, server, photo)
    wait_for(driver, "return window.samfast.id && window.samfast.width === 4000 && window.samfast.height === 3000", 120)
    image_id = driver.execute_script("return window.samfast.id")

    click_at(driver, 2100, 1500)
    wait_for(driver, "return window.samfast.lastMask && window.samfast.scores.length === 3", 120)
    points = driver.execute_script("return window.samfast.points")
    api = api_predict(server, image_id, {"points": points, "labels": [1], "multimask_output": True})
    mask = png_mask(api["masks"][driver.execute_script("return window.samfast.chosen")]["png"])
    ys, xs = np.nonzero(mask)
    assert 0 < len(xs) < mask.size
    assert driver.execute_script(MASK_SUMMARY) == [4000, 3000, len(xs), int(xs.sum()), int(ys.sum())]

    press_everything(driver)
    wait_for(driver, "return window.samfast.records.length && window.samfast.overlay", 240)
    assert driver.execute_script("return [window.samfast.overlay.width, window.samfast.overlay.height]") == [4000, 3000]
    shot(driver, "page_large_photo.png")


def test_page_keeps_to_the_image_and_prompts_shown(samfast_pkg, tiny_checkpoint, browser, tmp_path):
    """An answer to prompts since cleared (here: a click queued behind segment everything) is not
    drawn; a prompt the server refuses (past --max-prompts) is taken back; a transparent image's
    pixels hold no earlier drawing after Clear; a box released past the image's edge ends there."""
    from PIL import Image
    image = tmp_path / "alpha.png"
    pixels = np.zeros((300, 400, 4), np.uint8)
    pixels[50:250, 50:350] = [200, 120, 40, 255]  # (opaque in the middle, transparent around)
    Image.fromarray(pixels).save(image)
    driver = browser
    with running_server(samfast_pkg, tiny_checkpoint, "--max-prompts", "2") as (url, _):
        open_page_with(driver, url, image)
        wait_for(driver, "return window.samfast.id && window.samfast.width === 400")
        pixel_at = "return Array.from(document.getElementById('view').getContext('2d').getImageData(20, 20, 1, 1).data)"
        # A click answered after Clear: not drawn.
        for field, value in (("pps", "24"), ("iou", "0"), ("stab", "0")):
            box = driver.find_element("id", field)
            box.clear()
            box.send_keys(value)
        driver.find_element("id", "everything").click()
        requests = driver.execute_script("return window.samfast.requests")
        click_at(driver, 200, 150)
        driver.find_element("id", "clear").click()
        wait_for(driver, f"return window.samfast.requests >= {requests + 2}", 240)  # (everything, then the click)
        time.sleep(0.5)
        assert driver.execute_script("return [window.samfast.points.length, window.samfast.lastMask]") == [0, None]
        assert driver.find_element("id", "choices").text == ""
        # Three clicks on a server that takes two: the third is taken back, the second's mask stays.
        for i, x in enumerate((100, 200, 300)):
            click_at(driver, x, 150)
            wait_for(driver, f"return window.samfast.requests > {requests + 2 + i} || "
                             "document.getElementById('status').textContent.includes('failed')")
        wait_for(driver, "return document.getElementById('status').textContent.includes('past the limit of 2')")
        assert len(driver.execute_script("return window.samfast.points")) == 2
        # A point drawn on the transparent part, then cleared: the pixel is as before (it once kept the
        # point, and each redraw added the overlay's tint again).
        driver.find_element("id", "clear").click()
        before = driver.execute_script(pixel_at)
        click_at(driver, 20, 20)
        driver.find_element("id", "clear").click()
        assert driver.execute_script(pixel_at) == before
        # A box dragged out past the right edge: released there, it ends at the edge.
        requests = driver.execute_script("return window.samfast.requests")
        from selenium.webdriver.common.action_chains import ActionChains
        canvas = driver.find_element("id", "view")
        rw, rh = driver.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]",
                                       canvas)
        (ActionChains(driver).move_to_element_with_offset(canvas, int(100 * rw / 400 - rw / 2), int(100 * rh / 300 - rh / 2))
         .click_and_hold().move_to_element_with_offset(canvas, int(rw / 2 + 40), int(200 * rh / 300 - rh / 2))
         .release().perform())
        wait_for(driver, f"return window.samfast.requests > {requests} && window.samfast.box")
        box = driver.execute_script("return window.samfast.box")
        assert np.allclose(box, [100, 100, 400, 200], atol=3), box


def test_page_uploads_an_image_the_server_dropped_again(samfast_pkg, tiny_checkpoint, browser, tmp_path):
    """With caches that hold about one image, other uploads push the page's image out (404 "upload
    it first"): the page's next click uploads it again and is answered."""
    from PIL import Image
    driver = browser
    with running_server(samfast_pkg, tiny_checkpoint, "--cache-mb", "5", "--host-cache-mb", "6") as (url, _):
        open_page_with(driver, url, IMAGES / "dog.jpg")
        wait_for(driver, "return window.samfast.id && window.samfast.width === 800")
        image_id = driver.execute_script("return window.samfast.id")
        for i in range(4):
            other = tmp_path / f"other{i}.png"
            Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(other)
            body = other.read_bytes()
            boundary = "samfastboundary"
            form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"o.png\"\r\n"
                    f"Content-Type: image/png\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
            req = urllib.request.Request(f"{url}v1/images", data=form,
                                         headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            urllib.request.urlopen(req, timeout=60).read()
        try:
            api_predict(url, image_id, {"points": [[400, 260]], "labels": [1]})
            raise AssertionError("the page's image is still held: the caches are larger than this test assumes")
        except urllib.error.HTTPError as e:
            assert e.code == 404
        click_at(driver, 400, 260)
        wait_for(driver, "return window.samfast.lastMask && window.samfast.scores.length === 3")
        assert "predict:" in driver.find_element("id", "status").text

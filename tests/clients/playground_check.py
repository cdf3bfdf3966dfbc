"""The playground page in a real browser: Debian's Chromium driven through WebDriver (Debian's
chromedriver, the selenium client), against a running aiserve.

    playground_check.py ADDR [--key ADMIN_KEY] [--no-text] [--ocr FONTS_DIR] [--screenshots DIR]

The server holds digits, and (unless --no-text) an embedding model and a generation model:
drawing a 7 with pointer events reads "7", a chat streams several chunks and Stop ends it (and
the server stops generating), the heatmap of three texts renders, the rerank tab orders four
documents as /v1/rerank does (the seeded `rerank-bert` of encoders_check.py), the models tab lists digits
READY with live numbers, the tabs work from the keyboard, nothing overflows a phone's width, and
the browser logs no console error. With --key (a server with API keys; this one has the admin,
infer and metrics scopes) the page asks for the key before calling anything, then works with
it, and unloads and loads digits. --ocr: the server holds the `ocr` pipeline, and a picture with
two lines of text comes back with boxes and the words; without it the OCR tab says there is no
pipeline. --screenshots: a PNG of each tab (README's pictures).
"""
import argparse
import atexit
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

p = argparse.ArgumentParser()
p.add_argument("addr")
p.add_argument("--key")
p.add_argument("--no-text", action="store_true")
p.add_argument("--ocr")
p.add_argument("--screenshots")
args = p.parse_args()
base = f"http://{args.addr}"
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def browser():
    # Chromium's profile lives in a directory of its own, removed when this script ends (about
    # 3 MB a run, which would pile up in /tmp otherwise).
    profile = tempfile.mkdtemp(prefix="aiserve-chromium-")
    atexit.register(shutil.rmtree, profile, ignore_errors=True)
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    # Headless, and nothing that phones home: this machine's network is closed.
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,900",
                 f"--user-data-dir={profile}"]:
        o.add_argument(flag)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=o, service=Service("/usr/bin/chromedriver"))


d = browser()
# The models table re-renders every 2 s: an element found just before a refresh goes stale, so
# the waits look again instead of failing.
wait = WebDriverWait(d, 60, ignored_exceptions=[NoSuchElementException, StaleElementReferenceException])
by_id = lambda i: d.find_element(By.ID, i)


def console_errors():
    return [e for e in d.get_log("browser") if e["level"] == "SEVERE"]


def tab(name):
    by_id(f"tab-{name}").click()
    wait.until(lambda _: by_id(f"panel-{name}").is_displayed())


def options(select_id):
    return [o.get_attribute("value") for o in Select(by_id(select_id)).options]


def shot(name):
    if args.screenshots:
        os.makedirs(args.screenshots, exist_ok=True)
        d.save_screenshot(os.path.join(args.screenshots, f"{name}.png"))


def generated_tokens(model):
    req = urllib.request.Request(f"{base}/metrics")
    if args.key:
        req.add_header("Authorization", f"Bearer {args.key}")
    text = urllib.request.urlopen(req).read().decode()
    m = re.search(r'^aiserve_tokens_total\{kind="generated",model="%s"\} (\d+)' % model, text, re.M)
    return int(m.group(1)) if m else 0


def draw_seven():
    """A 7 on the pad with pointer events: the top bar, then the stem down to the left."""
    pad = by_id("digits-pad")
    w = pad.size["width"]
    s = w / 280  # offsets are from the pad's centre, in its CSS pixels
    a = ActionChains(d, duration=20)
    a.move_to_element_with_offset(pad, int(-80 * s), int(-90 * s)).click_and_hold()
    for x, y in [(-30, -90), (20, -90), (80, -90), (60, -40), (35, 10), (10, 60), (-10, 105)]:
        a.move_to_element_with_offset(pad, int(x * s), int(y * s))
    a.release().perform()


d.get(base + "/")
check(d.title == "aiserve playground", "the page loads")
csp = urllib.request.urlopen(base + "/").headers.get("Content-Security-Policy", "")
check("script-src 'self'" in csp and "unsafe-inline" not in csp, "the page comes with a strict CSP")

if args.key:
    wait.until(lambda _: by_id("banner").is_displayed())
    check("API key" in by_id("banner").text, "a server with keys: the page asks for one first")
    by_id("api-key").send_keys(args.key)
    by_id("api-key").send_keys(Keys.ENTER)
    wait.until(lambda _: not by_id("banner").is_displayed())
    check(True, "the key is taken and the models are listed")

# Digits: draw a 7.
tab("digits")
wait.until(lambda _: "digits" in options("digits-model"))
Select(by_id("digits-model")).select_by_value("digits")
draw_seven()
wait.until(lambda _: by_id("digits-label").text not in ("", "–"))
label = by_id("digits-label").text
bars = d.find_elements(By.CSS_SELECTOR, "#digits-bars li")
check(label == "7", f"a 7 drawn with pointer events reads {label!r}")
check(len(bars) == 10 and bars[0].find_element(By.CLASS_NAME, "bar-label").text == "7",
      f"the probability bars: {len(bars)} classes, the first is the label")
shot("digits")

if args.ocr:
    from PIL import Image, ImageDraw, ImageFont

    tab("ocr")
    wait.until(lambda _: "ocr" in options("ocr-model"))
    font = ImageFont.truetype(os.path.join(args.ocr, "dejavu", "DejaVuSans.ttf"), 40)
    img = Image.new("RGB", (760, 220), "white")
    g = ImageDraw.Draw(img)
    g.text((40, 40), "Serving models", font=font, fill="black")
    g.text((40, 130), "in one binary 2026", font=font, fill="black")
    path = os.path.join(tempfile.mkdtemp(), "lines.png")
    img.save(path)
    by_id("ocr-file").send_keys(path)
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#ocr-lines li")) >= 2 or by_id("ocr-error").is_displayed())
    # PP-OCR's detector may split a line at its wider gaps: the words, in reading order, count.
    lines = [li.find_element(By.TAG_NAME, "span").text for li in d.find_elements(By.CSS_SELECTOR, "#ocr-lines li")]
    check(" ".join(lines) == "Serving models in one binary 2026", f"OCR of a two-line picture: {lines}")
    check(by_id("ocr-canvas").size["width"] > 100, "the picture is drawn with its boxes")
    shot("ocr")
else:
    tab("ocr")
    check(options("ocr-model") == [""] and by_id("ocr-model").get_attribute("disabled") is not None,
          "the OCR tab says when no pipeline is loaded")

if not args.no_text:
    # Chat: a long greedy answer streams, then Stop ends it here and on the server.
    tab("chat")
    wait.until(lambda _: options("chat-model") != [""])
    model = options("chat-model")[0]
    by_id("chat-temperature").send_keys(Keys.HOME)  # the slider's minimum: greedy
    check(by_id("chat-temperature-value").text == "0", "the temperature slider works from the keyboard")
    mt = by_id("chat-max-tokens")
    mt.clear()
    mt.send_keys("3000")
    by_id("chat-system").send_keys("You are a helpful assistant.")
    by_id("chat-input").send_keys("Count from 1 to 500, separated by commas.")
    by_id("chat-send").click()
    seen = set()
    deadline = time.time() + 60
    while time.time() < deadline and len(seen) < 6:
        texts = d.find_elements(By.CSS_SELECTOR, "#chat-log .assistant .text")
        if texts:
            seen.add(len(texts[-1].text))
        time.sleep(0.05)
    check(len(seen) >= 6, f"the answer streams in several chunks ({len(seen)} lengths seen)")
    stats = by_id("chat-stats").text
    check("ms to first token" in stats and "tokens/s" in stats, f"time to first token and tokens/s shown: {stats!r}")
    shot("chat")
    check(by_id("chat-stop").is_enabled(), "Stop is offered while the answer streams")
    by_id("chat-stop").click()
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#chat-log .assistant")[-1].get_attribute("data-done"))
    done = d.find_elements(By.CSS_SELECTOR, "#chat-log .assistant")[-1].get_attribute("data-done")
    check(done == "stopped", f"Stop ends the answer ({done!r})")
    time.sleep(0.5)
    before = generated_tokens(model)
    time.sleep(1.5)
    after = generated_tokens(model)
    check(before == after and before > 0, f"the server stopped generating ({before} then {after} tokens)")
    check(by_id("chat-send").is_enabled() and not by_id("chat-stop").is_enabled(), "a new message can be sent")

    # Embeddings: three texts, a 3 x 3 heatmap.
    tab("embeddings")
    wait.until(lambda _: options("embed-model") != [""])
    d.find_element(By.CSS_SELECTOR, "#embed-form button[type=submit]").click()
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#embed-heatmap td")) == 9 or by_id("embed-error").is_displayed())
    cells = [float(c.get_attribute("data-value")) for c in d.find_elements(By.CSS_SELECTOR, "#embed-heatmap td")]
    check(len(cells) == 9, f"the heatmap of three texts has {len(cells)} cells")
    if len(cells) == 9:
        check(all(abs(cells[i * 4] - 1) < 1e-3 for i in range(3)), "each text is itself (diagonal 1.00)")
        check(cells[1] > cells[2] + 0.2, f"cat~kitten ({cells[1]:.2f}) beats cat~stocks ({cells[2]:.2f})")
    shot("embeddings")

    # Rerank (the tiny seeded cross-encoder `rerank-bert` of encoders_check.py): the documents
    # come back best first, in the order /v1/rerank gives for the same body.
    tab("rerank")
    wait.until(lambda _: "rerank-bert" in options("rerank-model"))
    Select(by_id("rerank-model")).select_by_value("rerank-bert")
    d.find_element(By.CSS_SELECTOR, "#rerank-form button[type=submit]").click()
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#rerank-results li")) == 4 or by_id("rerank-error").is_displayed())
    shown = [int(li.get_attribute("data-index")) for li in d.find_elements(By.CSS_SELECTOR, "#rerank-results li")]
    docs = [t.strip() for t in by_id("rerank-documents").get_attribute("value").split("\n") if t.strip()]
    body = json.dumps({"model": "rerank-bert", "query": by_id("rerank-query").get_attribute("value"), "documents": docs})
    req = urllib.request.Request(f"{base}/v1/rerank", body.encode(), {"Content-Type": "application/json"})
    if args.key:
        req.add_header("Authorization", f"Bearer {args.key}")
    want = [r["index"] for r in json.load(urllib.request.urlopen(req))["results"]]
    check(shown == want and len(shown) == 4, f"the rerank tab lists the documents best first ({shown}, /v1/rerank: {want})")
    shot("rerank")

# Models: the index with digits READY, load/unload buttons, live numbers.
tab("models")
DIGITS_ROW = "#models-table tbody tr[data-model=digits]"
state = wait.until(lambda _: d.find_element(By.CSS_SELECTOR, f"{DIGITS_ROW} .state").text)
check(state == "READY", "the models tab shows digits READY")
buttons = wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, f"{DIGITS_ROW} button")) or None)
check(buttons == 2, "digits can be loaded and unloaded")


def press(selector):
    """Clicks the element the selector finds now (the table may have been drawn anew)."""
    def attempt(_):
        d.find_element(By.CSS_SELECTOR, selector).click()
        return True
    wait.until(attempt)


wait.until(lambda _: by_id("metric-rps").text != "–")
check(re.fullmatch(r"[0-9.]+", by_id("metric-tps").text) is not None, "live requests/s, queue depth and tokens/s shown")
shot("models")
if args.key:
    # Unload then load through the buttons (admin key).
    press(f"{DIGITS_ROW} button[aria-label='Unload digits']")
    wait.until(lambda _: "unloaded" in by_id("models-note").text)
    press("button[aria-label='Load digits']")
    wait.until(lambda _: "loaded" in by_id("models-note").text and "unloaded" not in by_id("models-note").text)
    wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "#models-table tr[data-model=digits] .state").text == "READY")
    check(True, "unload and load from the models tab")

# Keyboard: arrows move between tabs.
by_id("tab-models").send_keys(Keys.ARROW_RIGHT)
check(d.switch_to.active_element.get_attribute("id") == "tab-chat" and by_id("panel-chat").is_displayed(),
      "arrow keys move between tabs (Models → Chat wraps)")
by_id("tab-chat").send_keys(Keys.END)
check(by_id("panel-models").is_displayed(), "End selects the last tab")

# A phone's viewport: nothing wider than the screen on any tab.
d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
for name in ["chat", "digits", "embeddings", "rerank", "ocr", "models"]:
    tab(name)
    wide = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    check(wide <= 0, f"{name} fits a 390-pixel-wide phone ({wide} px too wide)" if wide > 0 else f"{name} fits a 390-pixel-wide phone")
    if name == "digits":
        shot("phone")
d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

errors = console_errors()
check(not errors, f"no console errors {errors}")
d.quit()
if failures:
    sys.exit(f"{len(failures)} playground checks failed")
print("playground: all checks passed")

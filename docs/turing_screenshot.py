"""The README's picture of the Turing test page (docs/images/turing.png), taken by the selenium code that
tests/test_turing.py drives the page with: a session of CHECKPOINT, three digits answered, the fourth shown.

    python docs/turing_screenshot.py --checkpoint runs/mnist [--out docs/images/turing.png]

The session is gan_common.turing's, served as `python -m gan_jax.turing` serves it, but its results file goes to
a temporary folder: scripted answers never land among the run's real sessions (RUN/turing). Needs selenium and
Debian's chromium and chromium-driver (headless).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gan_common.turing import build_session, make_server
from gan_jax.backend import load_generator

WINDOW = (820, 720)  # CSS pixels: the page's column and one 224 px digit with room around it
WAIT_S = 20  # a trial's image and a reply come in milliseconds; this only bounds a hang


def chromium_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) on PATH, or None."""
    browser, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def open_chromium(paths: tuple[str, str]) -> webdriver.Chrome:
    """A headless Chromium through Debian's chromedriver (given, so selenium downloads nothing)."""
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--force-device-scale-factor=1",
                 "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}"):  # no-sandbox: CI runs as root
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(paths[1]), options=options)


def wait_for_trial(driver: webdriver.Chrome, trial: int, num: int) -> None:
    """Until the page shows trial `trial` (0-based) with its image loaded and the buttons enabled."""
    want = f"Digit {trial + 1} of {num}"
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.ID, "progress").text == want and d.find_element(By.ID, "human").is_enabled())


def answer(driver: webdriver.Chrome, value: str, by_key: bool) -> None:
    """Answer the digit shown, "human" or "ai": a click on its button, or its key (h / a)."""
    if by_key:
        driver.find_element(By.TAG_NAME, "body").send_keys({"human": "h", "ai": "a"}[value])
    else:
        driver.find_element(By.ID, value).click()


def screenshot(checkpoint: str, out: str, num: int = 20, answered: int = 3) -> None:
    """A session of `num` digits, `answered` of them answered (clicks and keys in turn), the next one shown."""
    generate, config = load_generator(checkpoint)
    session = build_session(generate, config, num, seed=0, meta={"checkpoint": checkpoint})
    server = make_server(session, "127.0.0.1", 0)
    driver = open_chromium(chromium_paths() or sys.exit("error: chromium and chromedriver are needed"))
    with tempfile.TemporaryDirectory() as tmp:
        session.start(tmp)  # the scripted answers go to a folder that is thrown away, never to RUN/turing
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
            for trial, value in enumerate(["human", "ai", "human"][:answered]):
                wait_for_trial(driver, trial, num)
                answer(driver, value, by_key=trial % 2 == 1)
            wait_for_trial(driver, answered, num)
            png = driver.get_screenshot_as_png()
        finally:
            driver.quit()
            server.shutdown()
            server.server_close()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(f"{out}.tmp", "wb") as f:
        f.write(png)
    os.replace(f"{out}.tmp", out)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a run folder, checkpoint folder or weights.safetensors")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "images", "turing.png"))
    args = parser.parse_args()
    screenshot(args.checkpoint, args.out)

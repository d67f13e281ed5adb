"""``tsn serve`` in a real headless browser: Debian's ``chromium`` driven by Selenium through the system
``chromedriver`` (``make browser`` installs both). The test starts a uvicorn server in a thread on a free port
with a tiny untrained TSN checkpoint, loads the page, uploads an image (one picture per task appears), moves the
task-space slider, uploads a bad file (the message appears), shows a synthetic scene, and stops the server.

Without the browser binaries (or Selenium) the test fails with a one-line reason in CI (``CI=true``) and is
skipped elsewhere. ``TSN_SERVE_CHECKPOINT`` serves another checkpoint (a trained demo run) and
``TSN_SERVE_SCREENSHOT=PATH`` saves a screenshot of the page: that is how docs/images/serve.png is made.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SIZE = (64, 64)
WAIT_S = 20.0


def _unavailable(reason: str) -> None:
    message = f"{reason}; install it with `make browser` (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _require_browser() -> None:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            _unavailable(f"the browser test needs {binary}, which is missing")
    for module in ("selenium", "fastapi", "uvicorn", "multipart"):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"the browser test needs the Python package {module!r} (pip install -e '.[test]')")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """(the page's URL, the model's tasks), with a uvicorn server running in a thread until the test ends."""
    _require_browser()
    import uvicorn

    import tsn
    from tsn.serving.app import create_app
    from tsn.serving.launch import run_input_size

    checkpoint = os.environ.get("TSN_SERVE_CHECKPOINT")
    if checkpoint:
        size = run_input_size(checkpoint) or SIZE
    else:
        torch.manual_seed(0)
        checkpoint = str(tsn.save_checkpoint(tmp_path / "tiny.pt", tsn.create_model("tsn_r10t_synthetic")))
        size = SIZE
    app = create_app(checkpoint, size=size, device="cpu")
    tasks = [task["name"] for task in app.state.showcase.info()["tasks"]]
    port = _free_port()
    uvicorn_server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not uvicorn_server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the uvicorn server did not start", pytrace=False)
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", tasks
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=WAIT_S)


@pytest.fixture
def browser(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager never looks for drivers online
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1050", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


def test_page_in_headless_browser(server, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, tasks = server
    wait = WebDriverWait(browser, WAIT_S)
    browser.get(url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
    assert browser.find_element(By.ID, "message").text == ""

    # An upload: one picture per task, each with its download link, then the slider's frames.
    photo = tmp_path / "photo.png"
    colours = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    Image.fromarray(colours).save(photo)
    browser.find_element(By.ID, "upload").send_keys(str(photo))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "img.task-output")) == len(tasks))
    pictures = browser.find_elements(By.CSS_SELECTOR, "img.task-output")
    assert [p.get_attribute("data-task") for p in pictures] == tasks
    assert all(p.get_attribute("src").startswith("data:image/png;base64,") for p in pictures)
    wait.until(lambda d: all(p.get_property("naturalWidth") == 80 for p in pictures))
    links = browser.find_elements(By.CSS_SELECTOR, "a.download")
    assert len(links) == len(tasks) and all(link.get_attribute("download").startswith("photo_") for link in links)

    # The slider: frames arrive after the prediction; moving it shows another point of the task space.
    slider = browser.find_element(By.ID, "mix-slider")
    wait.until(lambda d: slider.is_enabled())
    first = browser.find_element(By.ID, "mix-as-end").get_attribute("src")
    assert browser.find_element(By.ID, "mix-label").text.startswith("a = 0.00")
    slider.send_keys(Keys.END)
    wait.until(lambda d: d.find_element(By.ID, "mix-label").text.startswith("a = 1.00"))
    assert browser.find_element(By.ID, "mix-as-end").get_attribute("src") != first

    # Switching tasks: the filter shows one task's card beside the input.
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "task-filter")).select_by_value(tasks[-1])
    shown = [f for f in browser.find_elements(By.CSS_SELECTOR, "#results figure") if f.is_displayed()]
    assert len(shown) == 2
    Select(browser.find_element(By.ID, "task-filter")).select_by_value("")

    # A bad upload: a message on the page, the previous results stay.
    notes = tmp_path / "notes.png"
    notes.write_text("this is not a picture")
    browser.find_element(By.ID, "upload").send_keys(str(notes))
    wait.until(lambda d: d.find_element(By.ID, "message").text != "")
    message = browser.find_element(By.ID, "message").text
    assert message.startswith("notes.png: not an image") and "Traceback" not in message
    assert len(browser.find_elements(By.CSS_SELECTOR, "img.task-output")) == len(tasks)

    # A synthetic scene, with its ground truth; the message is cleared.
    index = browser.find_element(By.ID, "scene-index")
    index.clear()
    index.send_keys("15")
    browser.find_element(By.ID, "scene-button").click()
    wait.until(lambda d: d.find_element(By.ID, "truth-block").is_displayed())
    wait.until(lambda d: d.find_element(By.ID, "status").text == "")  # the scene's slider frames have arrived
    assert browser.find_element(By.ID, "message").text == ""
    assert len(browser.find_elements(By.CSS_SELECTOR, "#truth figure:not(.spacer)")) == len(tasks)

    screenshot = os.environ.get("TSN_SERVE_SCREENSHOT")
    if screenshot:
        browser.find_element(By.ID, "mix-slider").send_keys(Keys.HOME, *[Keys.RIGHT] * 5)
        browser.set_window_size(1400, browser.execute_script("return document.body.scrollHeight + 140"))
        browser.execute_script("window.scrollTo(0, 0)")
        Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB").save(screenshot, optimize=True)

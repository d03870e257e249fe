"""The dashboard and the report as a user sees them: Debian's headless Chromium driven by Selenium.

Skips when Chromium or its driver is missing, unless TUNER_REQUIRE_BROWSER=1 (CI), where that fails.
Screenshots land in each test's tmp_path.
"""

from __future__ import annotations

import base64
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import EXPORTED_FIGURES, invoke, make_study, piped, write_export
from tuner.curves import ACCURACY_OVER_TIME, ACCURACY_PER_EPOCH
from tuner.storage import load_study

# A real Chromium and `tuner dashboard` processes, on trained studies.
pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("TUNER_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("TUNER_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)
WAIT = 60  # seconds; generous because CI machines are busy


@pytest.fixture(scope="session")  # session scope: decided before the session-scoped trained_study is built
def browser(tmp_path_factory):
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        reason = f"headless browser tests need {' and '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("TUNER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}; TUNER_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(reason)

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    yield driver
    driver.quit()


def wait_for(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.2).until(lambda d: condition(d), message)


def body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def console_errors(driver) -> list[str]:
    """Errors the page logged since the last call (reading the log empties it)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def full_page_screenshot(driver, path: Path) -> Path:
    width, height = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@contextmanager
def running_dashboard(storage_url: str):
    """``tuner dashboard --port 0`` as a user starts it; yields (URL, process), stops it with SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "dashboard", "--storage", storage_url, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def stderr_once_exited() -> str:
        return piped(process.stderr).read() if process.poll() is not None else ""

    def forward_lines() -> None:
        for line in piped(process.stdout):
            lines.put(line)

    threading.Thread(target=forward_lines, daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + WAIT
        while url is None and time.monotonic() < deadline and process.poll() is None:
            try:
                match = re.search(r"open (http://\S+)", lines.get(timeout=0.5))
            except queue.Empty:
                continue
            url = match.group(1) if match else None
        assert url, f"tuner dashboard printed no URL (exit {process.poll()}): {stderr_once_exited()}"
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            assert response.status == 200
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def test_dashboard_lists_the_study_and_its_trials(browser, trained_study, tmp_path):
    from selenium.webdriver.common.by import By

    url, name = trained_study
    trials = load_study(storage_url=url, study_name=name).trials
    with running_dashboard(url) as (dashboard_url, process):
        browser.get(dashboard_url)
        wait_for(browser, lambda d: name in body_text(d), f"study {name!r} not listed")
        browser.save_screenshot(str(tmp_path / "dashboard-studies.png"))
        link = next(a for a in browser.find_elements(By.CSS_SELECTOR, "a[href*='/dashboard/studies/']") if name in a.text)
        study_url = link.get_attribute("href")
        link.click()
        wait_for(browser, lambda d: f"{name} (id=" in body_text(d) and "Best Trial" in body_text(d), "study page did not render")
        browser.save_screenshot(str(tmp_path / "dashboard-study.png"))

        browser.get(f"{study_url}/trials")
        wait_for(browser, lambda d: f"{len(trials)} Trials" in body_text(d), "trial list did not render")
        listed = set(re.findall(r"^Trial (\d+)$", body_text(browser), re.M))
        browser.save_screenshot(str(tmp_path / "dashboard-trials.png"))
        assert listed == {str(trial.number) for trial in trials}
        assert console_errors(browser) == []
        browser.get("about:blank")  # the dashboard page polls; leave it before its server stops
    assert process.returncode == 0, process.stderr.read()


def check_report_page(driver, path: Path, screenshot: Path) -> dict:
    """Open a report and wait for every plotly figure to draw; returns what the page shows."""
    from selenium.webdriver.common.by import By

    expected = path.read_text().count('class="plotly-graph-div"')
    driver.get("about:blank")
    console_errors(driver)  # drain what earlier pages logged: only this page's errors count
    driver.get(path.as_uri())
    drawn = (
        "return [...document.querySelectorAll('.plotly-graph-div')]"
        ".map(d => [d.querySelectorAll('svg.main-svg').length, (d._fullData || []).length])"
    )
    wait_for(
        driver,
        lambda d: len(d.execute_script(drawn)) == expected and all(svgs and traces for svgs, traces in d.execute_script(drawn)),
        "plotly figures did not render",
    )
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    full_page_screenshot(driver, screenshot)
    return {
        "figures": expected,
        "svgs": len(driver.find_elements(By.CSS_SELECTOR, ".main-svg")),
        "headings": [h.text for h in driver.find_elements(By.TAG_NAME, "h2")],
        "notes": [p.text for p in driver.find_elements(By.CSS_SELECTOR, ".note")],
        "network": [name for name in resources if not name.startswith(("file:", "data:", "blob:"))],
        "errors": console_errors(driver),
    }


def test_report_renders_offline_in_chromium(browser, trained_study, cli, tmp_path):
    url, name = trained_study
    out = tmp_path / "report.html"
    result = invoke(cli, "report", "--storage", url, "--out", out)
    assert result.exit_code == 0, result.output
    page = check_report_page(browser, out, tmp_path / "report.png")
    assert page["figures"] >= 6 and page["svgs"] >= page["figures"]
    assert page["network"] == [] and page["errors"] == []
    assert page["headings"][:5] == [
        "Trials by state",
        "Best validation loss so far, per epoch (what the pruner compares)",
        ACCURACY_PER_EPOCH,
        ACCURACY_OVER_TIME,
        "Optimization history (best so far)",
    ]
    assert browser.find_element("css selector", "h1").text == f"Study {name}"


def test_report_edge_cases_in_chromium(browser, cli, tmp_path):
    with_export = f"sqlite:///{tmp_path / 'exported.db'}"
    study = make_study(with_export, complete=8, pruned=3, failed=1)
    write_export(study, tmp_path / "model", EXPORTED_FIGURES)
    assert invoke(cli, "report", "--storage", with_export, "--out", tmp_path / "exported.html").exit_code == 0
    page = check_report_page(browser, tmp_path / "exported.html", tmp_path / "report-exported.png")
    assert page["headings"][-3:] == ["Final model", "Confusion matrix (test set)", "Final model training curves"]
    assert "Test accuracy 0.9801" in body_text(browser)
    assert page["errors"] == [] and page["network"] == []

    unfinished = f"sqlite:///{tmp_path / 'unfinished.db'}"
    make_study(unfinished, pruned=2, failed=1)
    assert invoke(cli, "report", "--storage", unfinished, "--out", tmp_path / "unfinished.html").exit_code == 0
    page = check_report_page(browser, tmp_path / "unfinished.html", tmp_path / "report-unfinished.png")
    assert page["figures"] == 2
    assert any("no completed trial yet (2 pruned, 1 failed)" in note for note in page["notes"])
    assert page["errors"] == []

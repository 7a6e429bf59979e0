"""Each dashboard page in headless Chromium: it loads, its charts have data, and it looks right.

The browser is Debian's chromium with its chromedriver, installed by scripts/install-browser
(run here, once per session; it does nothing when they are present), driven by Selenium.
Screenshots of every page are saved under test-artifacts/screenshots/ for review.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmtap.clickhouse_dsn import ClickHouseTarget
from llmtap.dev.kafka_broker import BrokerState
from llmtap.roles import start_role
from llmtap.settings import Settings, TopicsSettings
from llmtap.sinks.clickhouse.migrations import Migrator
from llmtap.web.server import WebDashboard
from tests.conftest import REPO_ROOT
from tests.integration.web.conftest import DashboardThread, Seed

pytestmark = pytest.mark.integration

SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
PAGES = ("overview", "cost", "drift", "risk", "alerts", "traces")
# Charts each page must draw (by caption prefix), so a page that silently lost one fails.
EXPECTED_CHARTS = {
    "overview": (
        "Spans per second",
        "Cost per minute by model",
        "Tokens",
        "LLM latency",
        "Error rate",
        "Unpriced calls",
    ),
    "cost": ("Cost over time by service", "Cost by service"),
    "drift": ("Drift score",),
    "risk": ("Risk distribution", "Risk over time"),
    "alerts": ("Alerts fired by severity",),
    "traces": ("Span duration",),
}


@pytest.fixture(scope="session")
def browser_executables() -> tuple[str, str]:
    subprocess.run([str(REPO_ROOT / "scripts" / "install-browser")], check=True, timeout=900)
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "chromium"
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "chromedriver"
    return chromium, driver


@pytest.fixture
def browser(browser_executables: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = browser_executables
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,1000",
        "--lang=en-US",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: Any, url: str, page: str) -> dict[str, int]:
    """Load a page and wait until it and its charts rendered; caption -> points drawn."""
    browser.get(url)
    return wait_for_page(browser, page)


def after(browser: Any, page: str, action: Any) -> dict[str, int]:
    """Do something on the page (click, select) and wait for the page it renders."""
    browser.execute_script("document.querySelector('.page').dataset.stale = 'true'")
    action()
    return wait_for_page(browser, page)


def wait_for_page(browser: Any, page: str) -> dict[str, int]:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(
        lambda driver: driver.execute_script(
            "const page = document.querySelector('.page');"
            "return page && !page.dataset.stale && page.dataset.page === arguments[0]"
            " && page.dataset.loaded === 'true'"
            " && [...document.querySelectorAll('[data-chart]')]"
            ".every((chart) => chart.querySelector('.empty') || chart.dataset.points !== '0');",
            page,
        )
    )
    error = browser.execute_script(
        "const error = document.querySelector('.page .error'); return error && error.textContent"
    )
    assert not error, f"page {page} shows an error: {error}"
    charts: dict[str, int] = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('[data-chart]')]"
        ".map((chart) => [chart.dataset.chart, Number(chart.dataset.points)]))"
    )
    return charts


def save_screenshot(browser: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1440, min(max(int(height), 1000), 4000))
    assert browser.save_screenshot(str(path)), f"no screenshot saved to {path}"
    browser.set_window_size(1440, 1000)
    return path


def browser_errors(browser: Any) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_every_page_draws_its_charts_with_data(
    browser: Any, dashboard: DashboardThread, seeded: Seed
) -> None:
    for page in PAGES:
        charts = open_page(browser, f"{dashboard.url}/#/{page}", page)
        for expected in EXPECTED_CHARTS[page]:
            matching = {caption: n for caption, n in charts.items() if caption.startswith(expected)}
            assert matching, f"page {page} has no chart {expected!r} (charts: {sorted(charts)})"
            assert all(points > 0 for points in matching.values()), (
                f"page {page}: chart {expected!r} has no data ({matching})"
            )
        canvases = browser.execute_script("return document.querySelectorAll('.page canvas').length")
        assert canvases >= 1, f"page {page} drew no canvas"
        path = save_screenshot(browser, page)
        assert path.stat().st_size > 10_000, f"{path} looks blank"
    assert browser_errors(browser) == []


def test_pages_show_the_stored_values(
    browser: Any, dashboard: DashboardThread, seeded: Seed
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(browser, f"{dashboard.url}/#/overview", "overview")
    kpis = {
        element.find_element(By.CLASS_NAME, "kpi-label").text: element.find_element(
            By.CLASS_NAME, "kpi-value"
        ).text
        for element in browser.find_elements(By.CLASS_NAME, "kpi")
    }
    assert kpis["LLM CALLS"] == str(seeded.llm_calls)
    assert kpis["UNPRICED CALLS"] == str(seeded.unpriced_calls)

    # cost grouped by tenant: one bar per tenant
    open_page(browser, f"{dashboard.url}/#/cost", "cost")
    group_by = Select(browser.find_element(By.ID, "group-by"))
    charts = after(browser, "cost", lambda: group_by.select_by_value("tenant"))
    assert charts.get("Cost by tenant") == 2

    # the riskiest response comes first, with its question and its context
    open_page(browser, f"{dashboard.url}/#/risk", "risk")
    first_card = browser.find_element(By.CSS_SELECTOR, ".cards .card")
    trace_link = first_card.find_element(By.LINK_TEXT, "trace").get_attribute("href")
    assert trace_link.endswith(seeded.riskiest_span[0])
    assert "How do I get a refund" in first_card.text
    assert "Refund policy paragraph" in first_card.text

    # trace search by text, then the detail view of a match
    open_page(browser, f"{dashboard.url}/#/traces", "traces")
    search = browser.find_element(By.CSS_SELECTOR, "#search-form input[name='q']")
    search.send_keys("order 42?")
    button = browser.find_element(By.CSS_SELECTOR, "#search-form button")
    after(browser, "traces", button.click)
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.clickable")
    assert len(rows) == 1
    charts = after(browser, "traces", rows[0].click)
    assert charts["Trace waterfall"] == 2
    detail = browser.find_element(By.ID, "span-detail").text
    assert "How do I get a refund for order 42?" in detail
    assert "risk" in detail
    save_screenshot(browser, "trace-detail")
    assert browser_errors(browser) == []


def test_a_token_protected_dashboard_asks_for_the_token(
    browser: Any, seeded: Seed, clickhouse_target: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.integration.web.conftest import dashboard_settings

    token = "browser-test-token-0123456789"
    running = DashboardThread(dashboard_settings(clickhouse_target, tmp_path, auth_token=token))
    try:
        browser.get(f"{running.url}/#/overview")
        WebDriverWait(browser, 30).until(
            lambda driver: (
                driver.find_element(By.ID, "token-dialog").get_attribute("open") is not None
            )
        )
        browser.find_element(By.ID, "token").send_keys(token)
        button = browser.find_element(By.CSS_SELECTOR, "#token-form button")
        charts = after(browser, "overview", button.click)
        assert charts["Spans per second"] > 0
    finally:
        running.close()


def test_a_tenant_token_pins_the_tenant_selector(
    browser: Any, seeded: Seed, clickhouse_target: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.integration.web.conftest import dashboard_settings

    operator, acme = "browser-operator-token-0123", "browser-acme-token-0123456"
    settings = dashboard_settings(
        clickhouse_target,
        tmp_path,
        auth_token=operator,
        tenant_tokens=[{"tenant": "acme", "token": acme}],
    )
    running = DashboardThread(settings)

    def options(select: str) -> list[str]:
        return [
            option.get_attribute("value")
            for option in browser.find_elements(By.CSS_SELECTOR, f"#{select} option")
        ]

    def sign_in(token: str) -> None:
        browser.get(f"{running.url}/#/traces")
        browser.execute_script("sessionStorage.setItem('llmtap.token', arguments[0])", token)
        browser.refresh()  # starts again, with the token
        wait_for_page(browser, "traces")
        WebDriverWait(browser, 30).until(lambda driver: len(options("service")) > 1)
        browser.get_log("browser")  # forget the first load's 401, before the token was set

    try:
        sign_in(operator)
        assert options("tenant") == ["", "acme", "globex"]
        assert browser.find_element(By.ID, "tenant").is_enabled()

        sign_in(acme)
        assert options("tenant") == ["acme"]
        assert not browser.find_element(By.ID, "tenant").is_enabled()
        # cost grouped by tenant: the token's tenant alone
        open_page(browser, f"{running.url}/#/cost", "cost")
        group_by = Select(browser.find_element(By.ID, "group-by"))
        charts = after(browser, "cost", lambda: group_by.select_by_value("tenant"))
        assert charts.get("Cost by tenant") == 1
        assert browser_errors(browser) == []
    finally:
        running.close()


class PipelineThread:
    """Collector, processor and sink (as `llmtap up` starts them) plus the dashboard, on one
    event loop in a thread; stopped in reverse order."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.started: list[Any] = []
        try:
            for role in ("collector", "processor", "sink"):
                self.started.append(self._call(start_role(role, settings, lambda line: None)))
            self.dashboard = WebDashboard(settings, lambda line: None)
            self._call(self.dashboard.start())
            self.started.append(self.dashboard)
        except BaseException:
            self.close()
            raise

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=180)

    def close(self) -> None:
        try:
            for component in reversed(self.started):
                self._call(component.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()


def pipeline_settings(bootstrap: str, target: ClickHouseTarget, data_dir: Path) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    topics = {
        name: f"test.{name}.{suffix}"
        for name, field in TopicsSettings.model_fields.items()
        if field.annotation in (str, "str")
    }
    return Settings(
        data_dir=data_dir,
        kafka={"bootstrap_servers": bootstrap},  # type: ignore[arg-type]
        topics={**topics, "partitions": 3},  # type: ignore[arg-type]
        collector={"http_port": 0, "grpc_port": 0},  # type: ignore[arg-type]
        # The stream stages (aggregates, risk, drift) have pipeline tests of their own; the pages
        # checked here read the spans, which the collector, normalizer and sink carry.
        processor={  # type: ignore[arg-type]
            "consumer_group": f"test-normalizer-{suffix}",
            "stream": {"enabled": False},
            "risk": {"enabled": False},
            "drift": {"enabled": False},
        },
        sink={  # type: ignore[arg-type]
            "consumer_group": f"test-sink-{suffix}",
            "derived_consumer_group": f"test-derived-{suffix}",
            "flush_interval_seconds": 0.3,
        },
        clickhouse={"dsn": f"chdb://{target.path}?database={target.database}"},  # type: ignore[arg-type]
        web={"port": 0},  # type: ignore[arg-type]
    )


def test_pages_show_traffic_sent_through_a_running_pipeline(
    browser: Any,
    kafka_broker: BrokerState,
    clickhouse_client: Any,
    clickhouse_target: ClickHouseTarget,
    tmp_path: Path,
) -> None:
    """Demo traffic over OTLP → collector → Kafka → normalizer → sink → ClickHouse → pages."""
    from llmtap.demo.traffic import TrafficConfig, TrafficGenerator

    Migrator(clickhouse_client, clickhouse_target.database).apply()
    settings = pipeline_settings(kafka_broker.bootstrap_servers, clickhouse_target, tmp_path)
    pipeline = PipelineThread(settings)
    try:
        collector = pipeline.started[0]
        generator = TrafficGenerator(
            TrafficConfig(endpoint=f"http://127.0.0.1:{collector.http_port}", seed=9)
        )
        report = generator.emit_interactions(40)
        generator.shutdown()  # flushes the SDK's batch span processors
        url = f"http://127.0.0.1:{pipeline.dashboard.port}"
        deadline = time.monotonic() + 120
        stored = 0
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/api/overview?range=15m", timeout=30) as response:
                stored = json.load(response)["totals"]["spans"]
            if stored >= report.spans:
                break
            time.sleep(1)
        assert stored == report.spans, f"{stored} of {report.spans} spans reached the dashboard"

        charts = open_page(browser, f"{url}/#/overview", "overview")
        for caption in ("Spans per second", "Tokens", "LLM latency (ms)"):
            assert charts[caption] > 0, caption
        save_screenshot(browser, "pipeline-overview")
        charts = open_page(browser, f"{url}/#/traces", "traces")
        assert charts["Span duration (ms) of the matches"] > 0
        save_screenshot(browser, "pipeline-traces")
        from selenium.webdriver.common.by import By

        row = browser.find_element(By.CSS_SELECTOR, "tr.clickable")
        charts = after(browser, "traces", row.click)
        assert charts["Trace waterfall"] >= 1
        save_screenshot(browser, "pipeline-trace-detail")
        assert browser_errors(browser) == []
    finally:
        pipeline.close()

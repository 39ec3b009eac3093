"""The browser chat page in a real headless Chromium (Debian's, driven by Selenium through Debian's
chromedriver): sign in, send and watch the stream, stop, reload and find the conversation, delete it;
a stored reply holding an XSS payload executes nothing; the page's security headers. A screenshot is
saved to $MOLTBOT_ARTIFACTS (the CI run's artifacts) or the test's temporary folder."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import WAIT_S, sign_in, start_chromium, wait
from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, create_key, running_server

XSS_REPLY = (
    'Look: <img src=x onerror="window.__xss = 1"> and <script>window.__xss = 2</script> '
    "[click me](javascript:window.__xss=3) and [safe](https://example.org/page)\n\n```\n<b>code</b>\n```"
)


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    with running_server(make_data_dir("ui")) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    driver = start_chromium()
    yield driver
    driver.quit()


def _sign_in(driver: WebDriver, server: Server) -> None:
    sign_in(driver, server.url, server.admin_key)


def _session_buttons(driver: WebDriver) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#sessions button")


def _send(driver: WebDriver, text: str) -> None:
    wait(driver, lambda d: d.find_element(By.ID, "input").is_enabled(), "the composer")
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def test_the_page_is_served_with_a_strict_policy(server: Server) -> None:
    with httpx.Client(verify=server.verify, base_url=server.url) as http:
        page = http.get("/ui")
        redirect = http.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert redirect.status_code == 307 and redirect.headers["location"] == "/ui"
    assert "<script>" not in page.text  # no inline script; the key is never part of a URL
    assert "http://" not in page.text and "https://" not in page.text  # nothing from another origin


def test_chat_stream_stop_reload_delete(server: Server, browser: WebDriver, tmp_path: Path) -> None:
    _sign_in(browser, server)
    key_in_storage = browser.execute_script("return sessionStorage.getItem('moltbot.key')")
    assert key_in_storage == server.admin_key and server.admin_key not in browser.current_url
    picker = "the model picker"  # inside a closed <details>: its text is read from the DOM
    wait(browser, lambda d: CHAT_MODEL in (d.find_element(By.ID, "model").get_attribute("textContent") or ""), picker)
    _send(browser, "Hello there, how are you?")
    wait(
        browser, lambda d: "tokens/s" in d.find_element(By.CSS_SELECTOR, "#messages li.assistant .meta").text, "a reply"
    )
    reply = browser.find_element(By.CSS_SELECTOR, "#messages li.assistant .body").text
    assert reply.strip()
    wait(browser, lambda d: len(_session_buttons(d)) == 1, "the new conversation in the list")

    # A long answer, stopped while it streams.
    _send(browser, "Tell me a very long story about a lighthouse keeper and the sea, in great detail.")
    wait(browser, lambda d: d.find_element(By.ID, "stop").is_displayed(), "the stop button")
    wait(
        browser,
        lambda d: (
            len(d.find_elements(By.CSS_SELECTOR, "#messages li.assistant")) == 2
            and d.find_elements(By.CSS_SELECTOR, "#messages li.assistant .body")[1].text.strip()
        ),
        "the second reply to start",
    )
    browser.find_element(By.ID, "stop").click()
    wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#messages li.assistant .meta")[1].text == "stopped",
        "stopped",
    )
    assert browser.find_element(By.ID, "send").is_displayed()
    artifacts = Path(os.environ.get("MOLTBOT_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "ui-chat.png"))

    # Reload: still signed in (sessionStorage), and the conversation is there with its messages.
    browser.refresh()
    wait(browser, lambda d: len(_session_buttons(d)) == 1, "the conversation after a reload")
    _session_buttons(browser)[0].click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages li")) == 4, "the stored turns")
    roles = [item.get_attribute("class") for item in browser.find_elements(By.CSS_SELECTOR, "#messages li")]
    assert roles == ["user", "assistant", "user", "assistant"]

    browser.find_element(By.ID, "delete").click()
    WebDriverWait(browser, WAIT_S).until(lambda d: d.switch_to.alert).accept()
    wait(browser, lambda d: not _session_buttons(d), "the conversation to be deleted")
    with server.client() as client:
        assert client.get("/v1/sessions").json()["data"] == []


def test_a_hostile_reply_executes_nothing(server: Server, browser: WebDriver) -> None:
    history = [{"role": "user", "content": "show me"}, {"role": "assistant", "content": XSS_REPLY}]
    with server.client() as client:
        imported = client.post(
            "/v1/sessions/import", json={"model": CHAT_MODEL, "title": "hostile", "messages": history}
        )
    assert imported.status_code == 201, imported.text
    _sign_in(browser, server)
    wait(browser, lambda d: any(b.text == "hostile" for b in _session_buttons(d)), "the imported conversation")
    next(b for b in _session_buttons(browser) if b.text == "hostile").click()
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages li")) == 2, "the hostile reply")
    body = browser.find_element(By.CSS_SELECTOR, "#messages li.assistant .body")
    assert "<img src=x" in body.text and "<script>" in body.text  # shown as text
    assert not body.find_elements(By.TAG_NAME, "img") and not body.find_elements(By.TAG_NAME, "script")
    links = {a.text: a.get_attribute("href") for a in body.find_elements(By.TAG_NAME, "a")}
    assert links == {"safe": "https://example.org/page"}  # the javascript: link stayed text
    assert body.find_element(By.CSS_SELECTOR, "pre code").text == "<b>code</b>"
    assert browser.execute_script("return window.__xss === undefined")


def test_the_graph_page_draws_a_nodes_neighbourhood(server: Server, browser: WebDriver, tmp_path: Path) -> None:
    key = create_key(server.data_dir, "documents", name="graph-ui")
    text = "Ingrid Halvorsen of Stanford University met Carlos Diaz in Boston to discuss the survey."
    with server.client(key) as client:
        created = client.post("/v1/documents", files={"file": ("meeting.txt", text.encode(), "text/plain")})
        assert created.status_code == 202, created.text
        deadline = time.monotonic() + WAIT_S
        while client.get(f"/v1/documents/{created.json()['id']}").json()["status"] != "done":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    with httpx.Client(verify=server.verify, base_url=server.url) as http:
        page = http.get("/ui/graph")
        library = http.get("/ui/vendor/cytoscape.min.js")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert library.status_code == 200 and len(library.content) > 100_000
    browser.get(f"{server.url}/ui/graph")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server.url}/ui/graph")
    wait(browser, lambda d: d.find_element(By.ID, "signin").is_displayed(), "the sign-in form")
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    browser.find_element(By.ID, "query").send_keys("Ingrid")
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    wait(browser, lambda d: "Ingrid Halvorsen" in d.find_element(By.ID, "results").text, "the search result")
    browser.find_element(By.CSS_SELECTOR, "#results button").click()
    wait(browser, lambda d: d.execute_script("return window.moltbotGraph.nodes().length") >= 2, "the drawing")
    labels = browser.execute_script("return window.moltbotGraph.nodes().map((n) => n.data('label'))")
    assert "Ingrid Halvorsen" in labels and "meeting.txt" in labels
    assert "mentions" in browser.find_element(By.ID, "details").text
    artifacts = Path(os.environ.get("MOLTBOT_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "ui-graph.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

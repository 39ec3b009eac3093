"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver (nothing downloaded),
and the waits and sign-in the page tests share."""

from __future__ import annotations

import os
from collections.abc import Callable

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers import require_tool

WAIT_S = 120


def start_chromium(*arguments: str) -> WebDriver:
    binary = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,850",
        *arguments,
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.accept_insecure_certs = True  # the server's own CA, on loopback only
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(WAIT_S)
    return driver


def wait(driver: WebDriver, condition: Callable[[WebDriver], object], what: str, timeout_s: float = WAIT_S) -> None:
    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition, message=what)
    except TimeoutException:  # say what the page showed and logged
        shown = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error") if e.text]
        raise AssertionError(f"waited for {what}; page errors {shown}; console {driver.get_log('browser')}") from None


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(url + "/")
    driver.execute_script("sessionStorage.clear()")  # signed out, whatever an earlier test left
    driver.refresh()
    wait(driver, lambda d: d.find_element(By.ID, "key").is_displayed(), "the sign-in form")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    wait(driver, lambda d: d.find_element(By.ID, "app").is_displayed(), "the chat after sign-in")

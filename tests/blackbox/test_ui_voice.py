"""Voice on the browser chat page, end to end in headless Chromium whose microphone is a WAV file
(`--use-file-for-fake-audio-capture`): push to talk and hands-free, through the AudioWorklet, the
Realtime WebSocket, Whisper, the 0.5B instruct model and Piper, the answer played by the page and both
turns stored in the conversation's session."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from moltbot.speech.audio import resample
from tests.browser import sign_in, start_chromium, wait
from tests.helpers import INSTRUCT_MODEL, START_TIMEOUT_S, Server, running_server

RATE = 16_000
LEAD_S, TAIL_S = 0.4, 4.0  # silence in the microphone's file before and after the question


@pytest.fixture(scope="module")
def server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    with running_server(make_data_dir("ui-voice"), {"MOLTBOT_MODELS": json.dumps([INSTRUCT_MODEL])}) as srv:
        srv.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield srv


@pytest.fixture(scope="module")
def microphone(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A WAV file the fake microphone plays in a loop: a spoken question between silences; and the
    question's length in seconds."""
    with server.client() as client:
        spoken = client.post(
            "/v1/audio/speech", json={"input": "What is the capital of France?", "response_format": "wav"}
        )
    assert spoken.status_code == 200, spoken.text
    samples, rate = soundfile.read(io.BytesIO(spoken.content), dtype="float32")
    question = resample(samples, rate, RATE)
    silence = np.zeros(int(RATE * LEAD_S), np.float32), np.zeros(int(RATE * TAIL_S), np.float32)
    path = tmp_path_factory.mktemp("microphone") / "question.wav"
    soundfile.write(path, np.concatenate([silence[0], question, silence[1]]), RATE, subtype="PCM_16")
    return path, len(question) / RATE


@pytest.fixture(scope="module")
def browser(microphone: tuple[Path, float]) -> Iterator[WebDriver]:
    driver = start_chromium(
        "--use-fake-ui-for-media-stream",  # the permission prompt is answered yes
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone[0]}",
        "--autoplay-policy=no-user-gesture-required",
    )
    yield driver
    driver.quit()


def _bubbles(driver: WebDriver, role: str) -> list[str]:
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, f"#messages li.{role} .body")]


def _heard_and_answered(driver: WebDriver) -> bool:
    users, answers = _bubbles(driver, "user"), _bubbles(driver, "assistant")
    return bool(users and answers and "france" in users[0].casefold() and "paris" in answers[0].casefold())


def _stored(server: Server, driver: WebDriver) -> list[tuple[str, str]]:
    session_id = driver.execute_script("return state.current")
    with server.client() as client:
        messages = client.get(f"/v1/sessions/{session_id}").json()["messages"]
    return [(m["role"], m["content"]) for m in messages]


def _start(driver: WebDriver, server: Server) -> None:
    sign_in(driver, server.url, server.admin_key)
    driver.execute_script("document.getElementById('temperature').value = '0'")


def test_push_to_talk(server: Server, browser: WebDriver, microphone: tuple[Path, float], tmp_path: Path) -> None:
    _start(browser, server)
    talk = browser.find_element(By.ID, "talk")
    # Held through the question (the fake microphone starts its file when the page opens it), released
    # in the silence after it: the page sends what it heard, commits the turn and asks for the answer.
    ActionChains(browser).click_and_hold(talk).pause(LEAD_S + microphone[1] + 1.5).release().perform()
    wait(browser, _heard_and_answered, "the transcript and the answer")
    state = browser.find_element(By.ID, "voice-state")
    wait(browser, lambda d: state.get_attribute("data-responses") == "1", "the answer's end")
    assert int(state.get_attribute("data-played-ms") or 0) > 500  # its speech was queued for playback
    meta = browser.find_element(By.CSS_SELECTOR, "#messages li.assistant .meta").text
    assert "first audio" in meta and "ms after you stopped" in meta, meta
    user, answer = _bubbles(browser, "user")[0], _bubbles(browser, "assistant")[0]
    assert _stored(server, browser) == [("user", user), ("assistant", answer)]
    artifacts = Path(os.environ.get("MOLTBOT_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "ui-voice.png"))


def test_hands_free(server: Server, browser: WebDriver) -> None:
    _start(browser, server)
    browser.find_element(By.ID, "handsfree").click()
    assert browser.find_element(By.ID, "handsfree").get_attribute("aria-pressed") == "true"
    # The server's VAD finds the turn in the microphone's stream; the page only listens and plays.
    wait(browser, _heard_and_answered, "the transcript and the answer")
    state = browser.find_element(By.ID, "voice-state")
    wait(browser, lambda d: int(state.get_attribute("data-responses") or 0) >= 1, "the answer's end")
    browser.find_element(By.ID, "handsfree").click()
    assert browser.find_element(By.ID, "handsfree").get_attribute("aria-pressed") == "false"
    stored = _stored(server, browser)
    assert stored[:2] == [("user", _bubbles(browser, "user")[0]), ("assistant", _bubbles(browser, "assistant")[0])]
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

"""Tool calls: declared tools checked, the answer's markup parsed (whole and streamed in any cut), the
JSON window a lazy grammar constrains."""

from __future__ import annotations

import json

import pytest

from moltbot.engine.tool_window import ToolWindow, WindowChange
from moltbot.errors import InvalidRequestError
from moltbot.services.tools import StreamSplitter, extract, parse_tools, plan

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
TOOLS = parse_tools([WEATHER, {"type": "function", "function": {"name": "get_time"}}])
TAGGED = (
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"city": "Tokyo"}}\n</tool_call>'
)


def _args(calls: list) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    return [(c.name, json.loads(c.arguments)) for c in calls]


def test_tagged_calls_are_parsed_and_never_left_in_content() -> None:
    content, calls = extract(TAGGED, TOOLS)
    assert content == "Let me check."
    assert _args(calls) == [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Tokyo"})]
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '  {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}\n',
    ],
)
def test_bare_and_fenced_calls_of_declared_functions(text: str) -> None:
    content, calls = extract(text, TOOLS)
    assert content == "" and _args(calls) == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "delete_everything", "arguments": {}}',
        '<tool_call>\n{"name": "delete_everything", "arguments": {}}\n</tool_call>',
        '{"city": "Paris"}',
        "Paris is sunny.",
    ],
)
def test_undeclared_or_plain_answers_stay_content(text: str) -> None:
    assert extract(text, TOOLS) == (text, [])


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 11])
def test_streamed_in_any_cut_gives_the_same_calls(cut: int) -> None:
    splitter = StreamSplitter(TOOLS)
    content, calls = "", []
    for start in range(0, len(TAGGED), cut):
        text, new = splitter.feed(TAGGED[start : start + cut])
        assert "<" not in text or "<tool" not in text
        content, calls = content + text, calls + new
    text, new = splitter.finish()
    content, calls = content + text, calls + new
    assert content.strip() == "Let me check."
    assert _args(calls) == [("get_weather", {"city": "Paris"}), ("get_time", {"city": "Tokyo"})]


def test_a_streamed_bare_call_is_decided_at_the_end() -> None:
    splitter = StreamSplitter(TOOLS)
    assert splitter.feed('{"name": "get_weather", ') == ("", [])
    assert splitter.feed('"arguments": {"city": "Oslo"}}') == ("", [])
    content, calls = splitter.finish()
    assert content == "" and _args(calls) == [("get_weather", {"city": "Oslo"})]


def test_plain_streamed_text_flows_and_parallel_off_keeps_one() -> None:
    splitter = StreamSplitter(TOOLS)
    assert splitter.feed("Hello <") == ("Hello ", [])
    assert splitter.feed("b>") == ("<b>", [])
    single = StreamSplitter(TOOLS, parallel=False)
    single.feed(TAGGED)
    single.finish()
    assert len(single.calls) == 1


def test_declared_tools_are_checked() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_tools([WEATHER, WEATHER])
    assert raised.value.param == "tools.1.function.name"
    with pytest.raises(InvalidRequestError):
        plan(TOOLS, {"type": "function", "function": {"name": "nope"}}, None)
    assert plan(TOOLS, "none", None) is None
    named = plan(TOOLS, {"type": "function", "function": {"name": "get_time"}}, False)
    assert named is not None and named.forced and [t.name for t in named.callable] == ["get_time"]
    assert "get_time" in named.grammar() and "get_weather" not in named.grammar()


def test_the_window_opens_at_the_tag_and_closes_with_the_json() -> None:
    window = ToolWindow("<tool_call>")
    assert window.feed("Sure <tool") is None
    assert window.feed("_call>") is WindowChange.OPENED
    assert window.feed('\n{"name": "f", "arguments": {"s": "}{\\"') is None
    assert window.feed('"}') is None
    assert window.feed("}") is WindowChange.CLOSED and not window.active
    assert window.feed("\n</tool_call>\n<tool_call>{") is WindowChange.OPENED
    assert ToolWindow("<tool_call>", active=True).feed('{"a": [1]}\n') is WindowChange.CLOSED

"""The evaluation set of bench/assistant_eval.py: tool calls in the style of the Berkeley Function-Calling
Leaderboard (simple, multiple, parallel, irrelevance), instructions with checkable constraints (in the
style of IFEval), and JSON schemas for structured output. Every case is scored by code, not by eye."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


S, N, INT = {"type": "string"}, {"type": "number"}, {"type": "integer"}
FUNCTIONS = {
    "get_weather": _fn(
        "get_weather",
        "Current weather in a city",
        {"city": S, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        ["city"],
    ),
    "get_time": _fn("get_time", "Current local time in a city", {"city": S}, ["city"]),
    "convert_currency": _fn(
        "convert_currency",
        "Convert an amount of money",
        {"amount": N, "from_currency": S, "to_currency": S},
        ["amount", "from_currency", "to_currency"],
    ),
    "get_stock_price": _fn("get_stock_price", "Latest price of a stock by ticker symbol", {"symbol": S}, ["symbol"]),
    "translate": _fn(
        "translate", "Translate text into a language", {"text": S, "target_language": S}, ["text", "target_language"]
    ),
    "calculate_bmi": _fn(
        "calculate_bmi",
        "Body-mass index from weight and height",
        {"weight_kg": N, "height_m": N},
        ["weight_kg", "height_m"],
    ),
    "get_population": _fn("get_population", "Population of a country", {"country": S}, ["country"]),
    "send_email": _fn("send_email", "Send an e-mail", {"to": S, "subject": S, "body": S}, ["to", "subject", "body"]),
    "create_reminder": _fn(
        "create_reminder", "Create a reminder", {"text": S, "minutes_from_now": INT}, ["text", "minutes_from_now"]
    ),
    "search_flights": _fn(
        "search_flights",
        "Search flights between two cities on a date (YYYY-MM-DD)",
        {"origin": S, "destination": S, "date": S},
        ["origin", "destination", "date"],
    ),
    "book_table": _fn(
        "book_table",
        "Book a restaurant table",
        {"restaurant": S, "people": INT, "time": S},
        ["restaurant", "people", "time"],
    ),
    "area_of_circle": _fn("area_of_circle", "Area of a circle from its radius", {"radius": N}, ["radius"]),
}


@dataclass(slots=True, frozen=True)
class ToolCase:
    kind: str  # simple, multiple, parallel, irrelevance
    prompt: str
    tools: tuple[str, ...]
    expected: tuple[tuple[str, dict[str, Any]], ...]  # (function, arguments); empty: no call

    def tool_specs(self) -> list[dict[str, Any]]:
        return [FUNCTIONS[name] for name in self.tools]


def _t(kind: str, prompt: str, tools: str, *expected: tuple[str, dict[str, Any]]) -> ToolCase:
    return ToolCase(kind, prompt, tuple(tools.split()), tuple(expected))


TOOL_CASES = [
    # simple: one function offered, one call
    _t("simple", "What's the weather in Berlin?", "get_weather", ("get_weather", {"city": "Berlin"})),
    _t("simple", "What time is it in Tokyo right now?", "get_time", ("get_time", {"city": "Tokyo"})),
    _t(
        "simple",
        "Convert 250 US dollars to euros.",
        "convert_currency",
        ("convert_currency", {"amount": 250, "from_currency": "USD", "to_currency": "EUR"}),
    ),
    _t(
        "simple",
        "What is Apple's stock price? The ticker is AAPL.",
        "get_stock_price",
        ("get_stock_price", {"symbol": "AAPL"}),
    ),
    _t(
        "simple",
        "Translate 'good morning' into Spanish.",
        "translate",
        ("translate", {"text": "good morning", "target_language": "Spanish"}),
    ),
    _t(
        "simple",
        "I weigh 70 kg and I am 1.75 m tall. What is my BMI?",
        "calculate_bmi",
        ("calculate_bmi", {"weight_kg": 70, "height_m": 1.75}),
    ),
    _t("simple", "How many people live in Canada?", "get_population", ("get_population", {"country": "Canada"})),
    _t(
        "simple",
        "Remind me to call mom in 30 minutes.",
        "create_reminder",
        ("create_reminder", {"text": "call mom", "minutes_from_now": 30}),
    ),
    _t(
        "simple",
        "Find flights from London to Paris on 2025-07-14.",
        "search_flights",
        ("search_flights", {"origin": "London", "destination": "Paris", "date": "2025-07-14"}),
    ),
    _t(
        "simple",
        "Book a table for 4 people at Luigi's at 19:30.",
        "book_table",
        ("book_table", {"restaurant": "Luigi's", "people": 4, "time": "19:30"}),
    ),
    _t("simple", "What is the area of a circle with radius 3?", "area_of_circle", ("area_of_circle", {"radius": 3})),
    _t(
        "simple",
        "Weather in Madrid in fahrenheit, please.",
        "get_weather",
        ("get_weather", {"city": "Madrid", "unit": "fahrenheit"}),
    ),
    _t(
        "simple",
        "Send an email to bob@example.com with subject 'Lunch' and body 'See you at noon'.",
        "send_email",
        ("send_email", {"to": "bob@example.com", "subject": "Lunch", "body": "See you at noon"}),
    ),
    _t(
        "simple",
        "How much is 100 GBP in JPY?",
        "convert_currency",
        ("convert_currency", {"amount": 100, "from_currency": "GBP", "to_currency": "JPY"}),
    ),
    _t("simple", "Price of the MSFT stock?", "get_stock_price", ("get_stock_price", {"symbol": "MSFT"})),
    # multiple: several functions offered, the right one chosen
    _t(
        "multiple",
        "What's the weather like in Rome?",
        "get_time get_weather get_population",
        ("get_weather", {"city": "Rome"}),
    ),
    _t(
        "multiple",
        "What's the local time in Sydney?",
        "get_weather get_time convert_currency",
        ("get_time", {"city": "Sydney"}),
    ),
    _t(
        "multiple",
        "Translate 'thank you' to German.",
        "send_email translate get_stock_price",
        ("translate", {"text": "thank you", "target_language": "German"}),
    ),
    _t(
        "multiple",
        "What is the population of Brazil?",
        "get_population get_weather area_of_circle",
        ("get_population", {"country": "Brazil"}),
    ),
    _t(
        "multiple",
        "Compute the area of a circle of radius 10.",
        "calculate_bmi area_of_circle get_time",
        ("area_of_circle", {"radius": 10}),
    ),
    _t(
        "multiple",
        "Convert 50 euros to Swiss francs (CHF).",
        "get_stock_price convert_currency translate",
        ("convert_currency", {"amount": 50, "from_currency": "EUR", "to_currency": "CHF"}),
    ),
    _t(
        "multiple",
        "Look up the NVDA share price.",
        "get_population get_stock_price book_table",
        ("get_stock_price", {"symbol": "NVDA"}),
    ),
    _t(
        "multiple",
        "Set a reminder in 15 minutes to check the oven.",
        "send_email create_reminder get_time",
        ("create_reminder", {"text": "check the oven", "minutes_from_now": 15}),
    ),
    _t(
        "multiple",
        "Flights from Berlin to Rome on 2025-09-01?",
        "book_table search_flights get_weather",
        ("search_flights", {"origin": "Berlin", "destination": "Rome", "date": "2025-09-01"}),
    ),
    _t(
        "multiple",
        "My weight is 80 kg and height 1.8 m; BMI?",
        "area_of_circle calculate_bmi get_population",
        ("calculate_bmi", {"weight_kg": 80, "height_m": 1.8}),
    ),
    # parallel: two calls needed
    _t(
        "parallel",
        "What's the weather in Paris and in London?",
        "get_weather",
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "London"}),
    ),
    _t(
        "parallel",
        "What time is it in New York and in Tokyo?",
        "get_time",
        ("get_time", {"city": "New York"}),
        ("get_time", {"city": "Tokyo"}),
    ),
    _t(
        "parallel",
        "Get the stock prices of AAPL and GOOG.",
        "get_stock_price",
        ("get_stock_price", {"symbol": "AAPL"}),
        ("get_stock_price", {"symbol": "GOOG"}),
    ),
    _t(
        "parallel",
        "Population of France and of Germany?",
        "get_population",
        ("get_population", {"country": "France"}),
        ("get_population", {"country": "Germany"}),
    ),
    _t(
        "parallel",
        "Weather in Oslo and the local time in Oslo.",
        "get_weather get_time",
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"city": "Oslo"}),
    ),
    _t(
        "parallel",
        "Areas of circles with radius 1 and radius 2.",
        "area_of_circle",
        ("area_of_circle", {"radius": 1}),
        ("area_of_circle", {"radius": 2}),
    ),
    _t(
        "parallel",
        "Translate 'hello' into French and into Italian.",
        "translate",
        ("translate", {"text": "hello", "target_language": "French"}),
        ("translate", {"text": "hello", "target_language": "Italian"}),
    ),
    _t(
        "parallel",
        "Convert 10 USD to EUR and 10 USD to GBP.",
        "convert_currency",
        ("convert_currency", {"amount": 10, "from_currency": "USD", "to_currency": "EUR"}),
        ("convert_currency", {"amount": 10, "from_currency": "USD", "to_currency": "GBP"}),
    ),
    # irrelevance: no function fits; no call
    _t("irrelevance", "Tell me a joke about cats.", "get_weather get_time"),
    _t("irrelevance", "What is 2 + 2?", "get_stock_price"),
    _t("irrelevance", "Write a haiku about autumn.", "send_email translate"),
    _t("irrelevance", "Who wrote Romeo and Juliet?", "get_population"),
    _t("irrelevance", "Explain what a hash table is in one sentence.", "book_table create_reminder"),
    _t("irrelevance", "Say hello.", "convert_currency"),
    _t("irrelevance", "What is the capital of Japan?", "search_flights"),
]


@dataclass(slots=True, frozen=True)
class InstructionCase:
    prompt: str
    check: Callable[[str], bool] = field(repr=False)


def _bullets(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^\s*[-*•]\s+", line)]


def _words(text: str) -> int:
    return len(re.findall(r"\b\w+\b", text))


def _json_keys(text: str, keys: set[str]) -> bool:
    body = text.strip()
    fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", body, re.DOTALL)
    try:
        value = json.loads(fenced.group(1) if fenced else body)
    except ValueError:
        return False
    return isinstance(value, dict) and set(value) == keys


def _cjk_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if "\u4e00" <= c <= "\u9fff") / max(len(letters), 1)


def _sentences(text: str) -> int:
    return len([s for s in re.split(r"[.!?]+(?:\s|$)", text.strip()) if s.strip()])


INSTRUCTION_CASES = [
    InstructionCase(
        "List exactly 3 benefits of exercise as bullet points starting with '- '. Write nothing else.",
        lambda t: len(_bullets(t)) == 3,
    ),
    InstructionCase(
        "Give exactly 5 fruits as a bullet list ('- ' per line) and nothing else.", lambda t: len(_bullets(t)) == 5
    ),
    InstructionCase("Describe the ocean in under 30 words.", lambda t: 0 < _words(t) < 30),
    InstructionCase("Explain photosynthesis in under 50 words.", lambda t: 0 < _words(t) < 50),
    InstructionCase(
        'Answer in JSON with exactly the keys "name" and "age" for a fictional person. Output only the JSON.',
        lambda t: _json_keys(t, {"name", "age"}),
    ),
    InstructionCase(
        'Return a JSON object with keys "city" and "country" for the Eiffel Tower. Only JSON.',
        lambda t: _json_keys(t, {"city", "country"}),
    ),
    InstructionCase("用中文回答：天空为什么是蓝色的？", lambda t: _cjk_share(t) > 0.5),  # noqa: RUF001
    InstructionCase(
        "Answer in Chinese: what is the largest planet in the solar system?", lambda t: _cjk_share(t) > 0.5
    ),
    InstructionCase(
        "Write one sentence about cats, entirely in lowercase letters.", lambda t: t.strip() != "" and t == t.lower()
    ),
    InstructionCase(
        "WRITE ONE SENTENCE ABOUT DOGS IN CAPITAL LETTERS ONLY.", lambda t: t.strip() != "" and t == t.upper()
    ),
    InstructionCase(
        "Reply with only the word 'yes' or 'no': is water wet?", lambda t: t.strip().strip(".").lower() in {"yes", "no"}
    ),
    InstructionCase(
        "Name the capital of Italy. Answer with one word only.", lambda t: _words(t) == 1 and "rome" in t.lower()
    ),
    InstructionCase(
        "Write a sentence about the moon that ends with the word 'night'.",
        lambda t: t.strip().rstrip(".!").lower().endswith("night"),
    ),
    InstructionCase(
        "Start your answer with the word 'Certainly'. What is 5 times 6?",
        lambda t: t.strip().startswith("Certainly") and "30" in t,
    ),
    InstructionCase("Describe a forest without using any commas.", lambda t: t.strip() != "" and "," not in t),
    InstructionCase("Write exactly two sentences about rain.", lambda t: _sentences(t) == 2),
    InstructionCase("Write exactly three sentences about coffee.", lambda t: _sentences(t) == 3),
    InstructionCase(
        "Give a title for a story about a dragon, wrapped in double angle brackets like <<title>>. "
        "Output only the title.",
        lambda t: re.fullmatch(r"\s*<<[^<>]+>>\s*", t) is not None,
    ),
    InstructionCase(
        "Mention the word 'banana' exactly twice in a short sentence.", lambda t: t.lower().count("banana") == 2
    ),
    InstructionCase(
        "List 4 colours, one per line, numbered '1.' to '4.', nothing else.",
        lambda t: [ln.strip()[:2] for ln in t.strip().splitlines()] == ["1.", "2.", "3.", "4."],
    ),
    InstructionCase(
        "Answer with a single number only: how many legs does a spider have?", lambda t: t.strip().rstrip(".") == "8"
    ),
    InstructionCase(
        "Write a short paragraph about tea that does not contain the letter 'z'.",
        lambda t: t.strip() != "" and "z" not in t.lower(),
    ),
    InstructionCase("Respond with the word 'done' and nothing else.", lambda t: t.strip().strip(".").lower() == "done"),
    InstructionCase(
        "Write a haiku: exactly three lines.", lambda t: len([ln for ln in t.strip().splitlines() if ln.strip()]) == 3
    ),
    InstructionCase(
        "Give me a Python one-liner that prints hello, inside a ```python code block, and nothing else.",
        lambda t: re.fullmatch(r"\s*```python\n.*print\(.*\n```\s*", t, re.DOTALL) is not None,
    ),
    InstructionCase(
        "End your reply with the exact phrase 'Is there anything else?'. "
        "What is the boiling point of water in Celsius?",
        lambda t: t.strip().endswith("Is there anything else?") and "100" in t,
    ),
    InstructionCase(
        "Wrap your entire answer in double quotes. What colour is grass?",
        lambda t: t.strip().startswith('"') and t.strip().endswith('"'),
    ),
    InstructionCase(
        "Write two paragraphs about the sea separated by the line ***.",
        lambda t: len([p for p in t.split("***") if p.strip()]) == 2,
    ),
    InstructionCase("In at least 60 words, describe a city at night.", lambda t: _words(t) >= 60),
    InstructionCase(
        "Answer 'True' or 'False' only: the sun is a star.", lambda t: t.strip().strip(".") in {"True", "False"}
    ),
]


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
        "additionalProperties": False,
    }


SCHEMA_CASES: list[tuple[str, dict[str, Any]]] = [
    ("A fictional person.", _obj({"name": S, "age": INT})),
    ("A book you like.", _obj({"title": S, "author": S, "year": INT})),
    ("Three colours.", _obj({"colours": {"type": "array", "items": S, "minItems": 3, "maxItems": 3}})),
    ("A city and whether it is a capital.", _obj({"city": S, "is_capital": {"type": "boolean"}})),
    (
        "A product with a price.",
        _obj({"product": S, "price": N, "currency": {"type": "string", "enum": ["USD", "EUR"]}}),
    ),
    ("The weather today.", _obj({"temperature_c": N, "sky": {"type": "string", "enum": ["sunny", "cloudy", "rainy"]}})),
    (
        "A to-do list of two items.",
        _obj(
            {
                "items": {
                    "type": "array",
                    "items": _obj({"task": S, "done": {"type": "boolean"}}),
                    "minItems": 2,
                    "maxItems": 2,
                }
            }
        ),
    ),
    ("A point on a plane.", _obj({"x": N, "y": N})),
    ("A user account.", _obj({"username": {"type": "string", "pattern": "^[a-z]{3,12}$"}, "email": S})),
    ("A movie rating.", _obj({"movie": S, "stars": {"type": "integer", "minimum": 1, "maximum": 5}})),
    ("An address.", _obj({"street": S, "city": S, "zip": S, "country": S})),
    ("A recipe.", _obj({"dish": S, "ingredients": {"type": "array", "items": S, "minItems": 1}, "minutes": INT})),
    ("A server's status.", _obj({"host": S, "up": {"type": "boolean"}, "load": N})),
    (
        "A date.",
        _obj(
            {
                "year": INT,
                "month": {"type": "integer", "minimum": 1, "maximum": 12},
                "day": {"type": "integer", "minimum": 1, "maximum": 31},
            }
        ),
    ),
    ("A team of people.", _obj({"team": S, "members": {"type": "array", "items": _obj({"name": S, "role": S})}})),
    ("An optional nickname for a person.", _obj({"name": S, "nickname": S}, required=["name"])),
    ("A log entry.", _obj({"level": {"type": "string", "enum": ["debug", "info", "warning", "error"]}, "message": S})),
    (
        "A geometric shape.",
        {"oneOf": [_obj({"kind": {"const": "circle"}, "radius": N}), _obj({"kind": {"const": "square"}, "side": N})]},
    ),
    ("Some tags.", _obj({"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "maxItems": 5}})),
    ("A nested config.", _obj({"service": S, "limits": _obj({"cpu": N, "memory_mb": INT})})),
]

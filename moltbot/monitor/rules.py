"""Alert rules: the shipped defaults and an operator's file, validated with the line of each mistake."""

from __future__ import annotations

import enum
import re
import string
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

MAX_WINDOW_S = 3600.0
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TEMPLATE_FIELDS = frozenset({"alert", "severity", "value", "threshold", "signal"})


class Signal(enum.StrEnum):
    """What a rule can watch; each is computed from the monitor's sample window."""

    CPU_PERCENT = "cpu_percent"  # CPU use of the container (or host), % of the cores it may use
    MEMORY_PERCENT = "memory_percent"  # working set, % of the container's limit (or host memory)
    DISK_PERCENT = "disk_percent"  # the data directory's filesystem, % used
    API_P99_SECONDS = "api_p99_seconds"  # P99 time to the response start over `window`
    TTFT_P99_SECONDS = "ttft_p99_seconds"  # P99 time to first token over `window`
    MODEL_LOAD_SUCCESS_PERCENT = "model_load_success_percent"  # of model loads since start
    MEMORY_GROWTH_MB_PER_MINUTE = "memory_growth_mb_per_minute"  # least-squares slope of RSS over `window`
    REQUESTS_IN_FLIGHT = "requests_in_flight"  # HTTP requests being served now
    REQUESTS_WAITING = "requests_waiting"  # requests queued in the engines for a sequence slot


# Signals computed over a time range, and the range used when a rule names none.
WINDOWED: dict[Signal, float] = {
    Signal.API_P99_SECONDS: 300.0,
    Signal.TTFT_P99_SECONDS: 300.0,
    Signal.MEMORY_GROWTH_MB_PER_MINUTE: 600.0,
}


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


def parse_duration(value: object) -> float:
    """Seconds from a number or a Prometheus-style duration: `90`, `30s`, `5m`, `1h30m`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like 30s, 5m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value and (match := _DURATION.match(value.strip())):
        hours, minutes, secs = match.groups()
        seconds = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0)
    else:
        raise ValueError(f"{value!r} is not a duration (examples: 30s, 5m, 1h)")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Rule(BaseModel):
    """One alert: fires at `warning` and, separately, at `critical` when the signal stays past it for `for`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    alert: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
    signal: Signal
    when: Literal["above", "below"] = "above"
    warning: float | None = None
    critical: float | None = None
    for_s: Duration = Field(default=0.0, alias="for")
    window_s: Duration | None = Field(default=None, alias="window")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    disabled: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.disabled:
            return self
        if self.warning is None and self.critical is None:
            raise ValueError("a rule needs a warning or a critical threshold")
        if self.warning is not None and self.critical is not None:
            ordered = self.warning < self.critical if self.when == "above" else self.warning > self.critical
            if not ordered:
                raise ValueError(f"the warning threshold must come before the critical one ('{self.when}')")
        if self.window_s is not None:
            if self.signal not in WINDOWED:
                raise ValueError(f"'window' applies only to {', '.join(sorted(WINDOWED))}")
            if not 0 < self.window_s <= MAX_WINDOW_S:
                raise ValueError(f"window must be more than 0 and at most {MAX_WINDOW_S:.0f} s")
        for name in self.labels:
            if not _LABEL_NAME.match(name) or name in {"alertname", "severity"}:
                raise ValueError(f"label name {name!r} is not allowed")
        for text in self.annotations.values():
            _check_template(text)
        return self

    @property
    def window(self) -> float:
        return self.window_s if self.window_s is not None else WINDOWED.get(self.signal, 0.0)

    def thresholds(self) -> list[tuple[Severity, float]]:
        pairs = [(Severity.WARNING, self.warning), (Severity.CRITICAL, self.critical)]
        return [(severity, value) for severity, value in pairs if value is not None]

    def crossed(self, value: float, threshold: float) -> bool:
        return value > threshold if self.when == "above" else value < threshold

    def annotate(self, severity: Severity, value: float, threshold: float) -> dict[str, str]:
        fields = {
            "alert": self.alert,
            "severity": severity.value,
            "value": f"{value:.4g}",
            "threshold": f"{threshold:g}",
            "signal": self.signal.value,
        }
        return {key: text.format_map(fields) for key, text in self.annotations.items()}


def _check_template(text: str) -> None:
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conversion:
            raise ValueError(f"annotation field {{{name}}} is not one of {sorted(TEMPLATE_FIELDS)}")


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the file and line."""


DEFAULT_RULES_FILE = "alert_rules.yml"


def default_rules_text() -> str:
    return resources.files("moltbot.monitor").joinpath(DEFAULT_RULES_FILE).read_text()


def load_rules(user_file: Path | None = None) -> list[Rule]:
    """The shipped rules, with the operator's file merged over them by alert name
    (a rule of the same name replaces the shipped one; `disabled: true` removes it)."""
    rules = {r.alert: r for r in parse_rules(default_rules_text(), f"<shipped {DEFAULT_RULES_FILE}>")}
    if user_file is not None:
        try:
            text = user_file.read_text()
        except OSError as exc:
            raise RulesError(f"alert rules file {user_file}: cannot be read ({exc.strerror})") from None
        for rule in parse_rules(text, str(user_file)):
            rules[rule.alert] = rule
    return [r for r in rules.values() if not r.disabled]


def parse_rules(text: str, source: str) -> list[Rule]:
    """Rules from YAML text `{rules: [...]}`; a mistake raises RulesError naming `source` and the line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise RulesError(f"alert rules file {source}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not isinstance(root, yaml.MappingNode):
        raise RulesError(f"alert rules file {source}, line 1: expected a mapping with a 'rules' list")
    unknown = set(data) - {"rules"}
    if unknown:
        raise RulesError(f"alert rules file {source}, line 1: unknown top-level keys {sorted(unknown)}")
    rules_node = _child(root, "rules")
    items = rules_node.value if isinstance(rules_node, yaml.SequenceNode) else []
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, (item, node) in enumerate(zip(data["rules"], items, strict=True)):
        where = f"alert rules file {source}, line {node.start_mark.line + 1}: rules[{index}]"
        if not isinstance(item, dict):
            raise RulesError(f"{where}: a rule is a mapping")
        try:
            rule = Rule.model_validate(item)
        except ValidationError as exc:
            raise RulesError(_describe(exc, source, index, node)) from None
        if rule.alert in seen:
            raise RulesError(f"{where}: alert {rule.alert!r} is defined twice")
        seen.add(rule.alert)
        rules.append(rule)
    return rules


def _child(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if getattr(key_node, "value", None) == key:
                return value_node  # type: ignore[no-any-return]
    return None


def _describe(exc: ValidationError, source: str, index: int, node: yaml.Node) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    line = node.start_mark.line
    if loc:
        key_node = _child(node, loc[0])
        if key_node is not None:
            line = key_node.start_mark.line
    field = ".".join(loc) or "rule"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"alert rules file {source}, line {line + 1}: rules[{index}].{field}: {message}"

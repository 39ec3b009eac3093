"""The sandboxed chat-template renderer: transformers' helpers, tools and tool messages, errors."""

from __future__ import annotations

import pytest

from moltbot.engine.template import ChatTemplate, TemplateError, TemplateRenderError
from moltbot.engine.types import ChatMessage, Role, ToolCall

TOOLS_TEMPLATE = (
    "{% for t in tools or [] %}[{{ t.function.name }}:{{ t.function.parameters | tojson }}]{% endfor %}"
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}"
    "{% for c in m.tool_calls or [] %}{{ c.function.name }}{{ c.function.arguments | tojson }}{% endfor %}"
    "{% if m.role == 'tool' %}#{{ m.tool_call_id }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def test_tools_tool_calls_and_tool_messages_render() -> None:
    template = ChatTemplate(TOOLS_TEMPLATE)
    messages = [
        ChatMessage(Role.USER, "é?"),
        ChatMessage(Role.ASSISTANT, "", (ToolCall("c1", "f", '{"x": "é"}'),)),
        ChatMessage(Role.TOOL, "42", (), "c1"),
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": 2}}}]
    assert (
        template.render(messages, tools) == '[f:{"b": 1, "a": 2}]<user>é?<assistant>f{"x": "é"}<tool>42#c1<assistant>'
    )


def test_raise_exception_is_a_render_error() -> None:
    template = ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('users first') }}{% endif %}")
    with pytest.raises(TemplateRenderError, match="users first"):
        template.render([ChatMessage(Role.ASSISTANT, "hi")])


def test_the_sandbox_holds() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}")
    with pytest.raises(TemplateRenderError):
        template.render([ChatMessage(Role.USER, "hi")])
    with pytest.raises(TemplateRenderError):
        ChatTemplate("{% set x = messages.append(1) %}").render([ChatMessage(Role.USER, "hi")])


def test_strftime_now_and_a_broken_template() -> None:
    assert ChatTemplate("{{ strftime_now('%Y') }}").render([]).isdigit()
    with pytest.raises(TemplateError):
        ChatTemplate("{% for %}")

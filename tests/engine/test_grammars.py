"""The JSON grammars on a real vocabulary: nothing but the end of generation after the top-level object
(JSON mode used to allow whitespace there), whitespace bounded inside it, schemas checked first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moltbot.engine.errors import InvalidGrammarError
from moltbot.engine.grammars import JSON_OBJECT_GRAMMAR, check_schema, json_schema_grammar
from moltbot.engine.llama_model import LlamaModelFile
from moltbot.engine.sampler import Sampler, SamplerConfig
from tests.helpers import CHAT_MODEL, bundled_gguf


@pytest.fixture(scope="module")
def model(bundled_cache: Path) -> Iterator[LlamaModelFile]:
    loaded = LlamaModelFile(CHAT_MODEL, bundled_gguf(bundled_cache), 512)
    yield loaded
    loaded.close()


def _sampler(model: LlamaModelFile, grammar: str) -> Sampler:
    config = SamplerConfig(temperature=0.0, top_p=1.0, top_k=40, min_p=0.0, seed=1, grammar=grammar)
    return Sampler(model.vocab, model.n_vocab, config)


def _after(model: LlamaModelFile, grammar: str, text: str) -> Sampler:
    sampler = _sampler(model, grammar)
    for token in model.tokenize(text, add_special=False):
        assert sampler._fits_grammar(token), f"{model.detokenize([token])!r} refused after part of {text!r}"
        sampler.accept(token)
    return sampler


def _token(model: LlamaModelFile, text: str) -> int:
    (token,) = model.tokenize(text, add_special=False)
    return token


@pytest.mark.parametrize("grammar", [JSON_OBJECT_GRAMMAR, json_schema_grammar({"type": "object"})])
def test_only_the_end_follows_the_closed_object(model: LlamaModelFile, grammar: str) -> None:
    sampler = _after(model, grammar, '{"name": "Tom", "age": 3}')
    for blank in ("\n", "\n\n", "  ", "\t"):
        assert not sampler._fits_grammar(_token(model, blank)), repr(blank)
    eos = model.model.token_eos()
    assert sampler._fits_grammar(eos)
    sampler.close()


def test_whitespace_inside_the_object_is_bounded(model: LlamaModelFile) -> None:
    sampler = _after(model, JSON_OBJECT_GRAMMAR, "{\n" + " " * 20)
    assert not sampler._fits_grammar(_token(model, " "))
    assert sampler._fits_grammar(_token(model, '"'))
    sampler.close()


@pytest.mark.parametrize(
    "schema",
    [{"type": "notatype"}, {"type": "object", "properties": []}, {"minLength": -1}, {"$ref": 5}],
)
def test_invalid_schemas_are_named_errors(schema: dict[str, object]) -> None:
    with pytest.raises(InvalidGrammarError) as raised:
        json_schema_grammar(schema)
    assert raised.value.param == "response_format.json_schema.schema"


def test_a_converter_failure_is_a_named_error() -> None:
    # Valid JSON Schema that llama.cpp's converter cannot enforce: its exception is never a 500.
    with pytest.raises(InvalidGrammarError, match="cannot be enforced"):
        json_schema_grammar({"$ref": "#/definitions/missing"})


def test_a_valid_schema_passes() -> None:
    check_schema({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})

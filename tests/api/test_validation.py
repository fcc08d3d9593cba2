"""The pure checks behind intake (`api.validation`): bounded, and exact at their limits."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest

from api import validation
from clipmod.errors import InvalidInput


def nested(levels: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def refusal(call: Any, *args: Any) -> tuple[str, str]:
    with pytest.raises(InvalidInput) as info:
        call(*args)
    return info.value.code, info.value.message


# -- JSON: depth, values, strings --------------------------------------------------------------


def test_depth_limit_is_exact() -> None:
    validation.check_fields({"metadata": nested(validation.MAX_JSON_DEPTH)})
    code, message = refusal(
        validation.check_fields, {"metadata": nested(validation.MAX_JSON_DEPTH + 1)}
    )
    assert code == "invalid_json" and message.startswith("metadata: nested more than 16")


def test_depth_counts_lists_too_and_names_the_field() -> None:
    deep_list: Any = []
    for _ in range(40):
        deep_list = [deep_list]
    assert refusal(validation.check_fields, {"text": "x", "extra": deep_list})[1].startswith(
        "extra:"
    )


def test_a_depth_far_beyond_the_stack_is_walked_without_recursion() -> None:
    """Built iteratively, 100,000 deep: a recursive walk would die; this one stops at 17."""
    code, _ = refusal(validation.check_fields, {"metadata": nested(100_000)})
    assert code == "invalid_json"


def test_value_count_is_bounded() -> None:
    validation.check_fields({"metadata": {"k": [0] * (validation.MAX_JSON_VALUES - 2)}})
    code, message = refusal(
        validation.check_fields, {"metadata": {"k": [0] * validation.MAX_JSON_VALUES}}
    )
    assert code == "invalid_input" and "more than" in message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "a\x00b"}, "text"),
        ({"external_id": "\ud800"}, "external_id"),
        ({"metadata": {"ok": ["fine", {"deep": "x\udfff"}]}}, "metadata"),
        ({"metadata": {"k\x00": 1}}, "metadata"),
        ({"\x00": 1}, "body"),
    ],
)
def test_unstorable_strings_anywhere_are_refused(body: dict[str, Any], field: str) -> None:
    code, message = refusal(validation.check_fields, body)
    assert code == "invalid_input" and message.startswith(f"{field}: contains")


def test_paired_surrogates_are_ordinary_text() -> None:
    """An emoji escaped as a surrogate pair decodes to one code point: nothing to refuse."""
    body = validation.loads_strict(r'{"text": "\ud83d\ude00", "metadata": {"\u00e9": "\u4e2d"}}')
    validation.check_fields(body)
    assert body["text"] == "\U0001f600"


@pytest.mark.parametrize(
    "raw", ['{"k": NaN}', '{"k": Infinity}', '{"k": -Infinity}', '{"k": 1e400}', "[-1e309]"]
)
def test_non_finite_numbers_are_refused(raw: str) -> None:
    with pytest.raises(validation.JSONRefused):
        validation.loads_strict(raw)


def test_finite_numbers_survive() -> None:
    assert validation.loads_strict('{"a": 1.5e300, "b": -0.0, "c": 12}') == {
        "a": 1.5e300,
        "b": -0.0,
        "c": 12,
    }


def test_deep_json_is_bad_json_not_a_recursion_error() -> None:
    """In a fresh thread, as under waitress: the C scanner's own guard, turned into ValueError."""
    outcome: list[BaseException | None] = []

    def parse() -> None:
        try:
            validation.loads_strict("[" * 100_000 + "]" * 100_000)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=parse)
    thread.start()
    thread.join()
    assert isinstance(outcome[0], validation.JSONRefused)


def test_parse_json_names_the_field() -> None:
    code, message = refusal(validation.parse_json, b'{"a": NaN}', "metadata")
    assert code == "invalid_json" and message.startswith("metadata: not valid JSON")
    assert refusal(validation.parse_json, b"\xff\xfe\x00", "body")[0] == "invalid_json"


# -- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["", "   ", "\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \t\n\u200e\u200f\u00ad"]
)
def test_invisible_text_is_blank(text: str) -> None:
    assert validation.is_blank(text)


@pytest.mark.parametrize("text", ["a", "\u200bx", "\u00a0\u0301", "\U0001f600"])
def test_visible_text_is_not_blank(text: str) -> None:
    assert not validation.is_blank(text)


# -- base64 --------------------------------------------------------------------------------------

DATA = bytes(range(256)) * 3
ENCODED = base64.b64encode(DATA).decode()


@pytest.mark.parametrize(
    "value",
    [
        ENCODED,
        "\n".join(ENCODED[i : i + 76] for i in range(0, len(ENCODED), 76)) + "\n",
        "\r\n".join(ENCODED[i : i + 64] for i in range(0, len(ENCODED), 64)),
        "data:image/png;base64," + ENCODED,
        "data:image/svg+xml;base64,\n" + ENCODED,
        "Data:Image/JPEG;Base64," + ENCODED,
    ],
)
def test_base64_forms_that_tools_print(value: str) -> None:
    assert validation.decode_base64(value) == DATA


@pytest.mark.parametrize(
    "value",
    [
        ENCODED[:-1],  # bad padding
        " " + ENCODED,
        ENCODED.replace("/", "_"),  # URL-safe alphabet
        "data:text/plain;base64," + ENCODED,
        "data:image/png," + ENCODED,
        "data:image/png;base64;base64," + ENCODED,
        "é" + ENCODED,
    ],
)
def test_base64_is_otherwise_strict(value: str) -> None:
    assert refusal(validation.decode_base64, value)[0] == "invalid_input"


# -- content hash --------------------------------------------------------------------------------


def test_content_hash_ignores_key_order_and_sees_every_part() -> None:
    base = validation.content_hash("t", "ab" * 32, {"x": 1, "y": [1, 2]})
    assert base == validation.content_hash("t", "ab" * 32, json.loads('{"y": [1, 2], "x": 1}'))
    assert len(base) == 64 and int(base, 16) >= 0
    variants = {
        validation.content_hash("t ", "ab" * 32, {"x": 1, "y": [1, 2]}),
        validation.content_hash("t", "cd" * 32, {"x": 1, "y": [1, 2]}),
        validation.content_hash("t", "ab" * 32, {"x": 1, "y": [2, 1]}),
        validation.content_hash("t", None, {"x": 1, "y": [1, 2]}),
        validation.content_hash(None, "ab" * 32, {"x": 1, "y": [1, 2]}),
        validation.content_hash("t", "ab" * 32, None),
    }
    assert base not in variants and len(variants) == 6


def test_content_hash_does_not_confuse_text_with_metadata() -> None:
    """A canonical object, not concatenation: moving bytes between fields changes the hash."""
    assert validation.content_hash("a", None, {"b": 1}) != validation.content_hash(
        'a", "metadata": {"b": 1}', None, None
    )

"""Table tests for the Kubernetes JSONPath subset used by the web provider."""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.analysis.providers.jsonpath import JSONPathError, compile_jsonpath, find

DOC: dict[str, Any] = {
    "status": "ok",
    "data": {"ok": True, "value": 0.97, "a.b": "dotted", "name-with-dash": 1},
    "items": [
        {"name": "a", "value": 1, "tags": ["x"]},
        {"name": "b", "value": 2, "tags": []},
        {"name": "c", "value": 3, "enabled": False},
    ],
    "empty": [],
    "nothing": None,
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("{$}", [DOC], id="root"),
        pytest.param("{}", [DOC], id="empty-braces-is-root"),
        pytest.param("{.status}", ["ok"], id="dot-field"),
        pytest.param("{$.status}", ["ok"], id="dollar-dot-field"),
        pytest.param("{@.status}", ["ok"], id="at-field"),
        pytest.param("{ $.status }", ["ok"], id="spaces-inside-braces"),
        pytest.param("$.data.ok", [True], id="bare-path-without-braces"),
        pytest.param("{$.data.ok}", [True], id="nested-field"),
        pytest.param("{$['data']['value']}", [0.97], id="bracket-single-quotes"),
        pytest.param('{$["data"]["a.b"]}', ["dotted"], id="bracket-double-quotes-dotted-key"),
        pytest.param("{.data.name-with-dash}", [1], id="dash-in-field"),
        pytest.param("{$.data['ok','value']}", [True, 0.97], id="key-union"),
        pytest.param("{$.items[0].value}", [1], id="index"),
        pytest.param("{$.items[-1].name}", ["c"], id="negative-index"),
        pytest.param("{$.items[0,2].name}", ["a", "c"], id="index-union"),
        pytest.param("{$.items[1:].name}", ["b", "c"], id="slice-open-end"),
        pytest.param("{$.items[:2].name}", ["a", "b"], id="slice-open-start"),
        pytest.param("{$.items[::2].name}", ["a", "c"], id="slice-step"),
        pytest.param("{$.items[*].value}", [1, 2, 3], id="wildcard-list"),
        pytest.param("{$.data.*}", [True, 0.97, "dotted", 1], id="wildcard-object"),
        pytest.param("{$.items[*].tags[0]}", ["x"], id="wildcard-then-index"),
        pytest.param("{..name}", ["a", "b", "c"], id="recursive-descent"),
        pytest.param("{$..tags[0]}", ["x"], id="recursive-then-index"),
        pytest.param("{$.items[?(@.value > 1)].name}", ["b", "c"], id="filter-gt"),
        pytest.param("{$.items[?(@.value>=2)].name}", ["b", "c"], id="filter-ge-no-spaces"),
        pytest.param("{$.items[?(@.name == 'b')].value}", [2], id="filter-eq-string"),
        pytest.param('{$.items[?(@.name != "b")].value}', [1, 3], id="filter-ne-string"),
        pytest.param("{$.items[?(@.value == 2.0)].name}", ["b"], id="filter-eq-number"),
        pytest.param("{$.items[?(@.enabled == false)].name}", ["c"], id="filter-eq-bool"),
        pytest.param("{$.items[?(@.enabled)].name}", ["c"], id="filter-exists"),
        pytest.param("{$.nothing}", [None], id="null-value-is-a-match"),
        pytest.param("{$.missing}", [], id="missing-key"),
        pytest.param("{$.items[7]}", [], id="index-out-of-range"),
        pytest.param("{$.empty[0]}", [], id="index-into-empty"),
        pytest.param("{$.status.deeper}", [], id="field-of-string"),
        pytest.param("{$.data[0]}", [], id="index-into-object"),
        pytest.param("{$.items.name}", [], id="field-of-list"),
    ],
)
def test_find(expression: str, expected: list[Any]) -> None:
    assert find(expression, DOC) == expected


@pytest.mark.parametrize(
    ("document", "expression", "expected"),
    [
        pytest.param(5, "{$}", [5], id="scalar-root"),
        pytest.param([10, 20], "{[1]}", [20], id="list-root-index"),
        pytest.param([{"a": 1}, {"a": 2}], "{[*].a}", [1, 2], id="list-root-wildcard"),
        pytest.param("text", "{.a}", [], id="field-of-string-root"),
    ],
)
def test_find_on_other_roots(document: Any, expression: str, expected: list[Any]) -> None:
    assert compile_jsonpath(expression).find(document) == expected


@pytest.mark.parametrize(
    "expression",
    [
        pytest.param("", id="empty"),
        pytest.param("status", id="bare-word"),
        pytest.param("{.a", id="unclosed-brace"),
        pytest.param("{.a}{.b}", id="two-expressions"),
        pytest.param("value: {.a}", id="leading-text"),
        pytest.param("{.a} trailing", id="trailing-text"),
        pytest.param("{range .items[*]}{.name}{end}", id="range"),
        pytest.param("{.a[}", id="unclosed-bracket"),
        pytest.param("{.a[x]}", id="bad-subscript"),
        pytest.param("{.a[1:2:0]}", id="zero-step"),
        pytest.param("{.a['x}", id="unterminated-string"),
        pytest.param("{.a[?(@.b == )]}", id="filter-missing-operand"),
        pytest.param("{.a..}", id="dangling-descent"),
        pytest.param("{.a b}", id="space-in-path"),
    ],
)
def test_invalid(expression: str) -> None:
    with pytest.raises(JSONPathError):
        compile_jsonpath(expression)


def test_error_message_names_the_expression() -> None:
    with pytest.raises(JSONPathError, match=r"JSONPath '\{\.a\[x\]\}'"):
        compile_jsonpath("{.a[x]}")

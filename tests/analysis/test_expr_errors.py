"""Error reporting, non-boolean results, nil/empty results, sandboxing and resource limits."""

from __future__ import annotations

import time

import pytest

from rollouts.analysis.expr import ConditionError, evaluate, evaluate_condition


@pytest.mark.parametrize(
    ("expression", "message", "column"),
    [
        pytest.param("result >", "unexpected end of expression", 9, id="dangling-operator"),
        pytest.param("result > 0.9 &&", "unexpected end of expression", 16, id="dangling-and"),
        pytest.param("(result > 1", "expected ')' to close the '(' at column 1", 12, id="unclosed-paren"),
        pytest.param("result > 1)", "unexpected ')'", 11, id="extra-paren"),
        pytest.param("[1, 2", "expected ','", 6, id="unclosed-array"),
        pytest.param("'abc", "unterminated string literal", 1, id="unterminated-string"),
        pytest.param("result @ 1", "unexpected character '@'", 8, id="bad-character"),
        pytest.param("1 +* 2", "unexpected '*'", 4, id="double-operator"),
        pytest.param("# > 1", "'#' can only be used inside a predicate", 1, id="pointer-outside-predicate"),
        pytest.param("all(result, #foo > 1)", "unknown pointer '#foo'", 13, id="unknown-pointer"),
        pytest.param("len(result", "expected ')' to close the call of len()", 11, id="unclosed-call"),
        pytest.param("1 ? 2", "expected ':'", 6, id="incomplete-ternary"),
        pytest.param(
            "99999999999999999999", "integer literal '99999999999999999999' is too large", 1, id="int-too-large"
        ),
        pytest.param("1.5.5", "unexpected number", 4, id="bad-number"),
        pytest.param("result.", "expected a field name", 8, id="missing-field-name"),
        pytest.param("a not b", "unexpected 'not'", 3, id="bare-not-as-binary"),
        pytest.param("/* open", "unclosed comment", 1, id="unclosed-comment"),
        pytest.param('"\\q"', "invalid escape sequence \\q", 2, id="bad-escape"),
        pytest.param("   ", "expression is empty", 1, id="blank"),
        pytest.param("all(result)", "all() expects at least 2 arguments", 11, id="predicate-missing-argument"),
        pytest.param("{a 1}", "expected ':' after a map key", 4, id="map-missing-colon"),
    ],
)
def test_parse_errors_quote_expression_and_column(expression: str, message: str, column: int) -> None:
    with pytest.raises(ConditionError) as info:
        evaluate_condition(expression, [1.0])
    error = info.value
    escaped = expression.replace("\\", "\\\\").replace('"', '\\"')
    assert f'condition "{escaped}" is invalid: ' in str(error)
    assert message in str(error)
    assert f"(at column {column})" in str(error)
    assert error.expression == expression
    assert error.position == column - 1
    assert error.column == column


def test_multiline_expression_reports_line_and_column() -> None:
    with pytest.raises(ConditionError, match=r"\(at line 2, column 8\)") as info:
        evaluate_condition("result > 0 &&\nresult @ 1", 1.0)
    assert info.value.position == 21


def test_runtime_error_message_matches_documented_format() -> None:
    with pytest.raises(ConditionError) as info:
        evaluate_condition("result[0] > 0.9", [])
    assert str(info.value) == (
        'condition "result[0] > 0.9" failed: index 0 out of range for a list of length 0 (at column 1); '
        "the metric result is nil or empty"
    )
    assert info.value.position == 0


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        pytest.param("result > 0.9", None, id="nil-comparison"),
        pytest.param("result[0] > 0.9", [], id="empty-list-index"),
        pytest.param("result.value > 1", {}, id="empty-map-missing-key"),
        pytest.param("result", None, id="nil-not-bool"),
    ],
)
def test_nil_or_empty_results_are_called_out(expression: str, result: object) -> None:
    with pytest.raises(ConditionError, match="metric result is nil or empty"):
        evaluate_condition(expression, result)


def test_other_failures_do_not_blame_empty_result() -> None:
    with pytest.raises(ConditionError) as info:
        evaluate_condition("result[5] > 1", [1.0])
    assert "nil or empty" not in str(info.value)


@pytest.mark.parametrize(
    ("expression", "result", "type_name"),
    [
        pytest.param("result", 0.5, "float", id="float"),
        pytest.param("result", 1, "int", id="int"),
        pytest.param("result", "true", "string", id="string"),
        pytest.param("result", [True], "array", id="array"),
        pytest.param("result", {"ok": True}, "map", id="map"),
        pytest.param("result ?? nil", None, "nil", id="nil"),
        pytest.param("now()", None, "time.Time", id="time"),
        pytest.param("map(result, # > 1)", [2], "array", id="mapped-bools"),
    ],
)
def test_non_boolean_condition(expression: str, result: object, type_name: str) -> None:
    with pytest.raises(ConditionError) as info:
        evaluate_condition(expression, result)
    assert f'condition "{expression}" returned {type_name}, expected a bool' in str(info.value)
    assert info.value.position is None


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        pytest.param("result.__class__", 1.0, id="dunder-class-on-float"),
        pytest.param("result.__class__.__bases__", "x", id="dunder-bases"),
        pytest.param("result.__dict__", {"a": 1}, id="dunder-dict-on-map"),
        pytest.param('"".join', None, id="str-method"),
        pytest.param('"".join(["a"])', None, id="str-method-call"),
        pytest.param("[].__len__", None, id="list-dunder"),
        pytest.param("[].__len__()", None, id="list-dunder-call"),
        pytest.param("result.keys()", {"a": 1}, id="dict-method-call"),
        pytest.param("result.get('a')", {"a": 1}, id="dict-get-method"),
        pytest.param("__import__('os').system('true')", None, id="import-call"),
        pytest.param("eval('1')", None, id="eval-call"),
        pytest.param("getattr(result, 'real')", 1, id="getattr-call"),
        pytest.param("result.real", 1, id="int-attribute"),
        pytest.param("now().__class__", None, id="datetime-dunder"),
        pytest.param("now().replace(year=1)", None, id="datetime-python-method"),
        pytest.param("duration('1s').total_seconds()", None, id="timedelta-python-method"),
        pytest.param("$env.__class__", None, id="env-dunder"),
        pytest.param("type(result)(1)", 1, id="call-a-value"),
    ],
)
def test_python_internals_are_unreachable(expression: str, result: object) -> None:
    with pytest.raises(ConditionError):
        evaluate_condition(expression, result)


def test_dunder_names_are_plain_map_keys() -> None:
    assert evaluate_condition("result.__dict__ == nil", {"a": 1}) is True
    assert evaluate_condition("result.__class__ == 'x'", {"__class__": "x"}) is True


def test_env_callables_are_not_called() -> None:
    with pytest.raises(ConditionError, match="not supported"):
        evaluate("f(1)", {"f": print})
    with pytest.raises(ConditionError, match="unknown function f"):
        evaluate("f(1)", {"f": 1})


def test_unsupported_input_types_are_rejected() -> None:
    with pytest.raises(ConditionError, match="values of Python type object are not supported"):
        evaluate_condition("result == nil", object())
    with pytest.raises(ConditionError, match="values of Python type set are not supported"):
        evaluate_condition("len(result) > 0", {1, 2})


def test_cyclic_input_is_rejected() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(ConditionError, match="nested too deeply"):
        evaluate_condition("len(result) > 0", cyclic)


def test_python_values_are_normalized() -> None:
    assert evaluate_condition("result == [1, 2]", (1, 2)) is True
    assert evaluate_condition("result > 1e18", 10**30) is True  # beyond int64: taken as a float


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        pytest.param("1 + " * 1100 + "1", "expression is too long", id="too-long"),
        pytest.param("(" * 200 + "1" + ")" * 200, "nested too deeply", id="deep-parentheses"),
        pytest.param("-" * 300 + "1", "nested too deeply", id="deep-unary"),
        pytest.param("1" + " + 1" * 500, "nested too deeply", id="long-operator-chain"),
        pytest.param("[" * 100 + "]" * 100, "nested too deeply", id="deep-arrays"),
        pytest.param("map(1..1000000, #)", "is too large", id="huge-range"),
        pytest.param("map(1..100000, map(1..100000, #))", "exceeded the limit", id="nested-map-bomb"),
        pytest.param("reduce(1..100000, #acc + #)", "exceeded the limit", id="reduce-bomb"),
        pytest.param("reduce(1..64, concat(#acc, #acc), [1])", "exceeded the limit", id="doubling-list"),
        pytest.param("reduce(1..64, #acc + #acc, 'ab')", "string result is too long", id="doubling-string"),
        pytest.param("repeat('a', 100000) matches '(a|aa)*b'", "exceeded the limit", id="regex-on-huge-input"),
        pytest.param(
            "let a = 1..100000; string([" + ",".join(["a"] * 50) + "])", "exceeded the limit", id="format-bomb"
        ),
        pytest.param(
            "let a = 1..100000; [" + ",".join(["a"] * 50) + "] == [" + ",".join(["a"] * 50) + "]",
            "exceeded the limit",
            id="equality-bomb",
        ),
        pytest.param(
            "fromJSON(repeat('[', 5000) + repeat(']', 5000))", "invalid JSON|nested too deeply", id="deep-json"
        ),
    ],
)
def test_resource_limits(expression: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConditionError, match=message):
        evaluate_condition(expression, None)
    assert time.monotonic() - started < 3


def test_long_expression_error_quotes_a_shortened_expression() -> None:
    expression = "result > 1 && " * 400 + "true"
    with pytest.raises(ConditionError) as info:
        evaluate_condition(expression, 1.0)
    assert "is too long" in str(info.value)
    assert len(str(info.value)) < 500
    assert info.value.expression == expression


def test_failing_clock_is_reported() -> None:
    with pytest.raises(ConditionError, match="clock returned str"):
        evaluate("now()", {}, now=lambda: "noon")  # type: ignore[arg-type, return-value]


def test_non_string_expression() -> None:
    with pytest.raises(ConditionError, match="must be a string"):
        evaluate_condition(42, 1.0)  # type: ignore[arg-type]

"""Property tests: arbitrary expressions over arbitrary results only ever raise ConditionError."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from rollouts.analysis.expr import ConditionError, evaluate, evaluate_condition

TOKENS = [
    "result", "#", "#index", "#acc", ".", "?.", "[", "]", "(", ")", "{", "}", ",", ":", "?", "??", "..",
    "+", "-", "*", "/", "%", "**", "^", "==", "!=", "<", ">", "<=", ">=", "&&", "||", "!", "not", "and", "or",
    "in", "not in", "contains", "matches", "startsWith", "endsWith", "|", "let", "x", "=", ";", "if", "else",
    "0", "1", "-1", "2.5", "1e3", ".5", "0x1F", "'a'", '"b"', "'^a.*$'", "'1h'", "`raw`", "true", "false", "nil",
    "len", "all", "any", "none", "one", "map", "filter", "count", "sum", "find", "findIndex", "reduce", "sortBy",
    "groupBy", "max", "min", "mean", "median", "abs", "round", "int", "float", "string", "first", "last", "keys",
    "values", "sort", "uniq", "flatten", "concat", "get", "split", "join", "repeat", "upper", "toJSON",
    "fromJSON", "type", "now", "duration", "date", "asInt", "asFloat", "isNaN", "isInf", "isNil", "default",
    "Year", "Seconds", "$env", "__class__", "__dict__",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
results = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
    ),
    max_leaves=12,
)


structured = st.recursive(
    st.sampled_from(["result", "result[0]", "result.a", "1", "0.5", "'a'", "nil", "true", "[1, 2]", "{a: 1}"]),
    lambda inner: st.one_of(
        st.tuples(
            inner, st.sampled_from(["+", "-", "*", "/", "%", "==", "<", ">=", "&&", "||", "in", "??", ".."]), inner
        ).map(" ".join),
        st.tuples(st.sampled_from(["len", "abs", "string", "int", "first", "isNil", "sort", "max", "type"]), inner).map(
            lambda t: f"{t[0]}({t[1]})"
        ),
        st.tuples(st.sampled_from(["all", "any", "map", "filter", "count", "sum", "find"]), inner, inner).map(
            lambda t: f"{t[0]}({t[1]}, {{{t[2].replace('result', '#')}}})"
        ),
        st.tuples(inner, inner, inner).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
        inner.map(lambda s: f"!({s})"),
        inner.map(lambda s: f"({s})[1:]"),
    ),
    max_leaves=8,
)


def _fixed_now() -> datetime:
    return datetime(2024, 1, 1, tzinfo=UTC)


def _check(expression: str, result: object) -> None:
    try:
        outcome = evaluate_condition(expression, result, now=_fixed_now)
    except ConditionError as error:
        assert "internal error" not in str(error), str(error)
        assert error.expression == expression
        assert error.position is None or 0 <= error.position <= len(expression)
    else:
        assert isinstance(outcome, bool)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=14).map(" ".join), results)
def test_token_soup_only_raises_condition_error(expression: str, result: object) -> None:
    _check(expression, result)


@settings(max_examples=150, deadline=None)
@given(structured, results)
def test_structured_expressions_only_raise_condition_error(expression: str, result: object) -> None:
    _check(expression, result)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40), results)
def test_arbitrary_text_only_raises_condition_error(expression: str, result: object) -> None:
    _check(expression, result)


@settings(max_examples=50, deadline=None)
@given(results)
def test_results_round_trip_through_evaluate(result: object) -> None:
    try:
        value = evaluate("result", {"result": result})
    except ConditionError as error:
        assert "internal error" not in str(error)
    else:
        assert evaluate_condition("result == result || result != result", value) in (True, False)

"""Each built-in function, Argo's injected functions and their quirks, and time handling."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from rollouts.analysis.expr import ConditionError, evaluate, evaluate_condition

from .test_expr_basics import same

FIXED_NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def fixed_clock() -> datetime:
    return FIXED_NOW


def value_of(expression: str, result: object = None) -> object:
    return evaluate(expression, {"result": result}, now=fixed_clock)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("len([1, 2, 3])", 3, id="len-array"),
        pytest.param("len({a: 1})", 1, id="len-map"),
        pytest.param("len('héllo')", 5, id="len-string-characters"),
        pytest.param("abs(-3)", 3, id="abs-int"),
        pytest.param("abs(-2.5)", 2.5, id="abs-float"),
        pytest.param("ceil(1.2)", 2.0, id="ceil"),
        pytest.param("floor(-1.2)", -2.0, id="floor"),
        pytest.param("round(2.5)", 3.0, id="round-half-away-from-zero"),
        pytest.param("round(-2.5)", -3.0, id="round-negative-half"),
        pytest.param("ceil(3)", 3.0, id="ceil-int-gives-float"),
        pytest.param("int(3.9)", 3, id="int-truncates"),
        pytest.param("int(-3.9)", -3, id="int-truncates-toward-zero"),
        pytest.param("int('42')", 42, id="int-from-string"),
        pytest.param("float(2)", 2.0, id="float-from-int"),
        pytest.param("float('2.5e1')", 25.0, id="float-from-string"),
        pytest.param("string(42)", "42", id="string-int"),
        pytest.param("string(1.0)", "1", id="string-whole-float-like-go"),
        pytest.param("string(1e6)", "1e+06", id="string-big-float-like-go"),
        pytest.param("string(0.1)", "0.1", id="string-small-float"),
        pytest.param("string(nil)", "<nil>", id="string-nil"),
        pytest.param("string([1, 'a', true])", "[1 a true]", id="string-array"),
        pytest.param("string({b: 1, a: 2})", "map[a:2 b:1]", id="string-map-sorted"),
        pytest.param("max(1, 5.5, 3)", 5.5, id="max-variadic"),
        pytest.param("max([1, 7, 3])", 7, id="max-array"),
        pytest.param("max([])", None, id="max-empty-is-nil"),
        pytest.param("min(4, [2, 3])", 2, id="min-mixed-args"),
        pytest.param("mean([1, 2, 3, 4])", 2.5, id="mean"),
        pytest.param("mean([])", 0.0, id="mean-empty"),
        pytest.param("median([5, 1, 3])", 3.0, id="median-odd"),
        pytest.param("median([4, 1, 3, 2])", 2.5, id="median-even"),
        pytest.param("first([7, 8])", 7, id="first"),
        pytest.param("first([])", None, id="first-empty-is-nil"),
        pytest.param("last([7, 8])", 8, id="last"),
        pytest.param("last(nil)", None, id="last-of-nil-is-nil"),
        pytest.param("get([1, 2], 1)", 2, id="get-index"),
        pytest.param("get([1, 2], 9)", None, id="get-out-of-range-is-nil"),
        pytest.param("get({a: 1}, 'a')", 1, id="get-key"),
        pytest.param("take([1, 2, 3], 2)", [1, 2], id="take"),
        pytest.param("keys({a: 1, b: 2})", ["a", "b"], id="keys"),
        pytest.param("values({a: 1, b: 2})", [1, 2], id="values"),
        pytest.param("toPairs({a: 1})", [["a", 1]], id="toPairs"),
        pytest.param("fromPairs([['a', 1]])", {"a": 1}, id="fromPairs"),
        pytest.param("sort([3, 1, 2])", [1, 2, 3], id="sort"),
        pytest.param("sort(['b', 'a'], 'desc')", ["b", "a"], id="sort-desc"),
        pytest.param("reverse([1, 2, 3])", [3, 2, 1], id="reverse"),
        pytest.param("flatten([1, [2, [3]]])", [1, 2, 3], id="flatten"),
        pytest.param("uniq([1, 1.0, 2, 'a', 'a'])", [1, 2, "a"], id="uniq"),
        pytest.param("concat([1], [2, 3], [])", [1, 2, 3], id="concat"),
        pytest.param("type(1)", "int", id="type-int"),
        pytest.param("type(1.5)", "float", id="type-float"),
        pytest.param("type('s')", "string", id="type-string"),
        pytest.param("type(nil)", "nil", id="type-nil"),
        pytest.param("type([])", "array", id="type-array"),
        pytest.param("type({})", "map", id="type-map"),
        pytest.param("type(now())", "time.Time", id="type-time"),
        pytest.param("type(duration('1s'))", "time.Duration", id="type-duration"),
        pytest.param("upper('abc')", "ABC", id="upper"),
        pytest.param("lower('ABC')", "abc", id="lower"),
        pytest.param("trim('  x  ')", "x", id="trim"),
        pytest.param("trim('__x__', '_')", "x", id="trim-chars"),
        pytest.param("trimPrefix('HelloWorld', 'Hello')", "World", id="trimPrefix"),
        pytest.param("trimSuffix('HelloWorld', 'World')", "Hello", id="trimSuffix"),
        pytest.param("split('a,b,c', ',')", ["a", "b", "c"], id="split"),
        pytest.param("split('a,b,c', ',', 2)", ["a", "b,c"], id="split-n"),
        pytest.param("splitAfter('a,b', ',')", ["a,", "b"], id="splitAfter"),
        pytest.param("replace('aXbX', 'X', '-')", "a-b-", id="replace"),
        pytest.param("repeat('ab', 3)", "ababab", id="repeat"),
        pytest.param("join(['a', 'b'], ', ')", "a, b", id="join"),
        pytest.param("join(['a', 'b'])", "ab", id="join-no-separator"),
        pytest.param("indexOf('apple pie', 'pie')", 6, id="indexOf"),
        pytest.param("lastIndexOf('apple pie apple', 'apple')", 10, id="lastIndexOf"),
        pytest.param("hasPrefix('HelloWorld', 'Hello')", True, id="hasPrefix"),
        pytest.param("hasSuffix('HelloWorld', 'World')", True, id="hasSuffix"),
        pytest.param(
            "toJSON({b: [1, 2.5], a: 'x<'})", '{\n  "a": "x\\u003c",\n  "b": [\n    1,\n    2.5\n  ]\n}', id="toJSON"
        ),
        pytest.param("toJSON(1.0)", "1", id="toJSON-whole-float"),
        pytest.param(
            "fromJSON('{\"a\": [1, true, null]}')", {"a": [1.0, True, None]}, id="fromJSON-numbers-are-floats"
        ),
        pytest.param("toBase64('Hello World')", "SGVsbG8gV29ybGQ=", id="toBase64"),
        pytest.param("fromBase64('SGVsbG8gV29ybGQ=')", "Hello World", id="fromBase64"),
        pytest.param("bitand(0b1010, 0b1100)", 0b1000, id="bitand"),
        pytest.param("bitor(0b1010, 0b1100)", 0b1110, id="bitor"),
        pytest.param("bitxor(0b1010, 0b1100)", 0b0110, id="bitxor"),
        pytest.param("bitnand(0b1010, 0b1100)", 0b0010, id="bitnand"),
        pytest.param("bitnot(0b1010)", -0b1011, id="bitnot"),
        pytest.param("bitshl(0b101101, 2)", 0b10110100, id="bitshl"),
        pytest.param("bitshr(0b101101, 2)", 0b1011, id="bitshr"),
        pytest.param("bitushr(-0b101, 2)", 4611686018427387902, id="bitushr"),
    ],
)
def test_builtins(expression: str, expected: object) -> None:
    assert same(value_of(expression), expected)


@pytest.mark.parametrize(
    ("expression", "result", "expected"),
    [
        pytest.param("asInt(result) == 12", "12", True, id="asInt-string"),
        pytest.param("asInt(result) == -3", -3.9, True, id="asInt-float-truncates"),
        pytest.param("asInt(result) == 5", 5, True, id="asInt-int"),
        pytest.param("asFloat(result) > 1.4", "1.5", True, id="asFloat-string"),
        pytest.param("asFloat(result) == 2.0", 2, True, id="asFloat-int"),
        pytest.param("isNaN(result)", float("nan"), True, id="isNaN-true"),
        pytest.param("isNaN(result)", 0.5, False, id="isNaN-false"),
        pytest.param("isNaN(result[0])", [float("nan")], True, id="isNaN-element"),
        pytest.param("isInf(result)", float("inf"), True, id="isInf-positive"),
        pytest.param("isInf(result)", float("-inf"), True, id="isInf-negative"),
        pytest.param("isInf(result)", 1e308, False, id="isInf-false"),
        pytest.param("isNil(result)", None, True, id="isNil-nil"),
        pytest.param("isNil(result)", 0.0, False, id="isNil-zero"),
        pytest.param("isNil(anything)", None, True, id="isNil-ignores-argument"),
        pytest.param("isNil(result.whatever)", None, True, id="isNil-does-not-evaluate-argument"),
        pytest.param("isNil(nil)", 1.0, False, id="isNil-tests-result-not-argument"),
        pytest.param("default(result, 0) == 0", None, True, id="default-nil"),
        pytest.param("default(result, 0) == 4", 4, True, id="default-value"),
        pytest.param("default(anything, 0) == 4", 4, True, id="default-ignores-argument"),
        pytest.param("default(result[0], 0) == [4]", [4], True, id="default-returns-whole-result"),
        pytest.param("default(result, 1) > 0.5", None, True, id="default-in-comparison"),
    ],
)
def test_argo_functions(expression: str, result: object, expected: bool) -> None:
    assert evaluate_condition(expression, result) is expected


@pytest.mark.parametrize(
    ("expression", "result", "message"),
    [
        pytest.param("asInt(result)", "1.5", "cannot parse '1.5' as an integer", id="asInt-bad-string"),
        pytest.param("asInt(result)", True, "asInt\\(\\) not supported on bool", id="asInt-bool"),
        pytest.param("asInt(result)", float("nan"), "cannot convert NaN", id="asInt-nan"),
        pytest.param("asFloat(result)", "abc", "cannot parse 'abc' as a number", id="asFloat-bad-string"),
        pytest.param("asFloat(result)", None, "asFloat\\(\\) not supported on nil", id="asFloat-nil"),
        pytest.param("isNaN(result)", None, "isNaN\\(\\) expects a number, got nil", id="isNaN-nil"),
        pytest.param("isNil()", None, "isNil\\(\\) expects 1 argument, got 0", id="isNil-arity"),
        pytest.param("default(result)", None, "default\\(\\) expects 2 arguments, got 1", id="default-arity"),
        pytest.param("len(result)", None, "invalid argument for len \\(type nil\\)", id="len-nil"),
        pytest.param("len(result)", 3, "invalid argument for len \\(type int\\)", id="len-int"),
        pytest.param("abs(result)", "x", "invalid argument for abs", id="abs-string"),
        pytest.param("int(result)", "x", "cannot parse 'x' as an integer", id="int-bad-string"),
        pytest.param("max(result, 1)", ["a"], "invalid argument for max \\(type string\\)", id="max-strings"),
        pytest.param("join(result)", [1], "expects an array of strings", id="join-non-strings"),
        pytest.param("repeat('x', -1)", None, "non-negative count", id="repeat-negative"),
        pytest.param("repeat('x', 2000000)", None, "longer than", id="repeat-too-long"),
        pytest.param("fromJSON('{')", None, "invalid JSON", id="fromJSON-invalid"),
        pytest.param("fromJSON('NaN')", None, "invalid JSON", id="fromJSON-nan-literal"),
        pytest.param("toJSON(result)", float("nan"), "unsupported value NaN", id="toJSON-nan"),
        pytest.param("fromBase64('***')", None, "illegal base64", id="fromBase64-invalid"),
        pytest.param("sort(result)", [1, "a"], "invalid operation", id="sort-mixed-types"),
        pytest.param("keys(result)", [1], "must be a map", id="keys-non-map"),
        pytest.param("bitshl(1, -1)", None, "negative shift count", id="bitshl-negative"),
        pytest.param("bitand(1.5, 1)", None, "expects integers", id="bitand-float"),
        pytest.param("nosuch(1)", None, "unknown function nosuch\\(\\)", id="unknown-function"),
        pytest.param("len", None, "len is a function", id="function-used-as-value"),
        pytest.param("result2 > 1", None, "unknown name result2", id="unknown-variable"),
    ],
)
def test_builtin_errors(expression: str, result: object, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        evaluate(expression, {"result": result})


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("now()", FIXED_NOW, id="now-uses-injected-clock"),
        pytest.param("now() - duration('1h')", FIXED_NOW - timedelta(hours=1), id="now-minus-duration"),
        pytest.param("now() + duration('1h30m')", FIXED_NOW + timedelta(minutes=90), id="now-plus-duration"),
        pytest.param("duration('1h') + duration('30m')", timedelta(minutes=90), id="duration-sum"),
        pytest.param("duration('1m') * 2", timedelta(minutes=2), id="duration-times-int"),
        pytest.param("-duration('5s')", timedelta(seconds=-5), id="negative-duration"),
        pytest.param("now() - date('2024-05-06')", timedelta(hours=7, minutes=8, seconds=9), id="time-minus-time"),
        pytest.param("date('2023-08-14')", datetime(2023, 8, 14, tzinfo=UTC), id="date-iso"),
        pytest.param("date('2023-08-14T10:00:00Z')", datetime(2023, 8, 14, 10, tzinfo=UTC), id="date-rfc3339"),
        pytest.param(
            "date('2023-08-14T10:00:00.5+02:00')",
            datetime(2023, 8, 14, 10, 0, 0, 500000, tzinfo=timezone(timedelta(hours=2))),
            id="date-rfc3339-offset-fraction",
        ),
        pytest.param("date('2023-08-14 15:04:05')", datetime(2023, 8, 14, 15, 4, 5, tzinfo=UTC), id="date-datetime"),
        pytest.param(
            "date('14/08/2023 3:04PM', '02/01/2006 3:04PM')", datetime(2023, 8, 14, 15, 4, tzinfo=UTC), id="date-layout"
        ),
        pytest.param("now().Year()", 2024, id="method-year"),
        pytest.param("now().Unix()", int(FIXED_NOW.timestamp()), id="method-unix"),
        pytest.param("now().Format('2006-01-02T15:04:05Z07:00')", "2024-05-06T07:08:09Z", id="method-format"),
        pytest.param("duration('1h').Seconds()", 3600.0, id="duration-seconds"),
        pytest.param("duration('90m').Hours()", 1.5, id="duration-hours"),
        pytest.param("string(duration('1h30m'))", "1h30m0s", id="duration-string-like-go"),
        pytest.param("string(duration('250ms'))", "250ms", id="duration-string-ms"),
        pytest.param("string(date('2024-01-02'))", "2024-01-02 00:00:00 +0000 UTC", id="time-string-like-go"),
        pytest.param("toJSON(date('2024-01-02'))", '"2024-01-02T00:00:00Z"', id="time-json"),
    ],
)
def test_time(expression: str, expected: object) -> None:
    assert same(value_of(expression), expected)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("now() > date('2024-01-01')", True, id="time-comparison"),
        pytest.param("now() - duration('1h') < now()", True, id="range-query-style"),
        pytest.param("duration('1h') > duration('59m')", True, id="duration-comparison"),
        pytest.param("date('2024-05-06') == date('2024-05-06T02:00:00+02:00')", True, id="time-equality-across-zones"),
        pytest.param("now().Before(now() + duration('1s'))", True, id="method-before"),
    ],
)
def test_time_conditions(expression: str, expected: bool) -> None:
    assert evaluate_condition(expression, None, now=fixed_clock) is expected


def test_default_clock_is_utc_aware() -> None:
    value = evaluate("now()", {})
    assert isinstance(value, datetime)
    assert value.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - value).total_seconds()) < 60


def test_naive_injected_clock_is_taken_as_utc() -> None:
    value = evaluate("now()", {}, now=lambda: datetime(2024, 1, 1))
    assert value == datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        pytest.param("duration('5 minutes')", "invalid duration", id="duration-bad"),
        pytest.param("duration(5)", "expects a string", id="duration-number"),
        pytest.param("date('yesterday')", "invalid date", id="date-bad"),
        pytest.param("date('2024-13-01')", "invalid date", id="date-bad-month"),
        pytest.param("date('2024', '2006', 'Nowhere/City')", "unknown time zone", id="date-bad-zone"),
        pytest.param("now() + 1", "invalid operation: time.Time \\+ int", id="time-plus-number"),
        pytest.param("now() < 5", "invalid operation: time.Time < int", id="time-vs-number"),
        pytest.param("now().Year", "methods are called like Year\\(\\)", id="method-without-call"),
        pytest.param("now().Nope()", "has no method Nope\\(\\)", id="unknown-method"),
        pytest.param("now().Year(1)", "takes no arguments", id="method-arity"),
    ],
)
def test_time_errors(expression: str, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        evaluate(expression, {}, now=fixed_clock)


def test_nan_survives_float_conversion() -> None:
    value = evaluate("float('NaN')", {})
    assert isinstance(value, float) and math.isnan(value)


def test_evaluate_with_other_variables_for_range_queries() -> None:
    start = evaluate("now() - duration(lookback)", {"lookback": "15m"}, now=fixed_clock)
    assert start == FIXED_NOW - timedelta(minutes=15)
    assert evaluate("window.step * 2", {"window": {"step": 30}}) == 60


def test_condition_error_survives_pickling() -> None:
    import pickle

    with pytest.raises(ConditionError) as info:
        evaluate_condition("result[0] > 1", [])
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert (copy.expression, copy.position) == ("result[0] > 1", 0)

"""Literals, operators, precedence, numbers, strings and nil in the condition language."""

from __future__ import annotations

import math

import pytest

from rollouts.analysis.expr import ConditionError, evaluate, evaluate_condition

NAN = float("nan")
INF = float("inf")


def value_of(expression: str, result: object = None) -> object:
    return evaluate(expression, {"result": result})


def same(got: object, expected: object) -> bool:
    """Equal with the same type (1 and 1.0 and True differ), recursively; NaN equals NaN."""
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(got, float) and math.isnan(got)
    if type(got) is not type(expected):
        return False
    if isinstance(expected, list):
        assert isinstance(got, list)
        return len(got) == len(expected) and all(same(g, e) for g, e in zip(got, expected, strict=True))
    if isinstance(expected, dict):
        assert isinstance(got, dict)
        return got.keys() == expected.keys() and all(same(got[k], expected[k]) for k in expected)
    return got == expected


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("42", 42, id="int"),
        pytest.param("0x2A", 42, id="hex-int"),
        pytest.param("0o52", 42, id="octal-int"),
        pytest.param("0b101010", 42, id="binary-int"),
        pytest.param("1_000_000", 1000000, id="int-underscores"),
        pytest.param("0.5", 0.5, id="float"),
        pytest.param(".5", 0.5, id="float-leading-dot"),
        pytest.param("1e3", 1000.0, id="float-exponent"),
        pytest.param("2.5E-1", 0.25, id="float-exponent-negative"),
        pytest.param("'single'", "single", id="single-quoted-string"),
        pytest.param('"double"', "double", id="double-quoted-string"),
        pytest.param(r'"tab\tnew\nline \"q\" \\"', 'tab\tnew\nline "q" \\', id="string-escapes"),
        pytest.param(r'"\u00e9\x41\101"', "éAA", id="string-unicode-hex-octal-escapes"),
        pytest.param("`raw \\n`", "raw \\n", id="raw-string"),
        pytest.param("true", True, id="true"),
        pytest.param("false", False, id="false"),
        pytest.param("nil", None, id="nil"),
        pytest.param("[1, 'a', nil, [2]]", [1, "a", None, [2]], id="array-literal"),
        pytest.param("[1, 2,]", [1, 2], id="array-trailing-comma"),
        pytest.param("{a: 1, 'b': 2, \"c d\": 3}", {"a": 1, "b": 2, "c d": 3}, id="map-literal"),
        pytest.param("{1: 'x'}", {"1": "x"}, id="map-number-key-is-string"),
        pytest.param("{(1 + 1): 'x'}", {2: "x"}, id="map-expression-key"),
        pytest.param("1 /* comment */ + 2 // trailing", 3, id="comments"),
    ],
)
def test_literals(expression: str, expected: object) -> None:
    assert same(value_of(expression), expected)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("1 + 2 * 3", 7, id="mul-before-add"),
        pytest.param("(1 + 2) * 3", 9, id="parentheses"),
        pytest.param("7 / 2", 3.5, id="int-div-gives-float"),
        pytest.param("6 / 3", 2.0, id="exact-int-div-still-float"),
        pytest.param("7 % 3", 1, id="modulo"),
        pytest.param("-7 % 3", -1, id="modulo-truncated-like-go"),
        pytest.param("2 ** 10", 1024.0, id="power-is-float"),
        pytest.param("2 ^ 3", 8.0, id="caret-power"),
        pytest.param("2 ** 3 ** 2", 512.0, id="power-right-associative"),
        pytest.param("-2 ** 2", -4.0, id="unary-minus-below-power"),
        pytest.param("1 + 2.5", 3.5, id="int-plus-float"),
        pytest.param("10 - 2.5", 7.5, id="int-minus-float"),
        pytest.param("3 * 0.5", 1.5, id="int-times-float"),
        pytest.param("1 / 0", INF, id="div-by-zero-inf"),
        pytest.param("-1 / 0", -INF, id="div-by-zero-neg-inf"),
        pytest.param("0 / 0", NAN, id="zero-div-zero-nan"),
        pytest.param("9223372036854775807 + 1", -9223372036854775808, id="int64-wraps"),
        pytest.param("-(-9223372036854775807 - 1)", -9223372036854775808, id="negate-min-int-wraps"),
        pytest.param("+3", 3, id="unary-plus"),
        pytest.param("--3", 3, id="double-negation"),
        pytest.param("'a' + 'b'", "ab", id="string-concat"),
        pytest.param("1..3", [1, 2, 3], id="range"),
        pytest.param("3..1", [], id="empty-range"),
        pytest.param("true ? 1 : 2", 1, id="ternary-true"),
        pytest.param("false ? 1 : 2", 2, id="ternary-false"),
        pytest.param("false ? 1 : true ? 2 : 3", 2, id="ternary-nested"),
        pytest.param("nil ?? 5", 5, id="nil-coalescing"),
        pytest.param("3 ?? 5", 3, id="nil-coalescing-keeps-value"),
        pytest.param("let x = 2; let y = 3; x * y", 6, id="let"),
        pytest.param("if 1 > 2 { 'a' } else if 2 > 1 { 'b' } else { 'c' }", "b", id="if-else-chain"),
        pytest.param("[1, 2] | map(# * 10) | sum()", 30, id="pipe"),
    ],
)
def test_arithmetic_and_operators(expression: str, expected: object) -> None:
    assert same(value_of(expression), expected)


@pytest.mark.parametrize(
    ("expression", "result", "expected"),
    [
        pytest.param("result > 0.9", 0.95, True, id="float-gt"),
        pytest.param("result >= 0.95", 0.95, True, id="float-ge-equal"),
        pytest.param("result < 100", 42, True, id="int-lt"),
        pytest.param("result <= 1", 1.0, True, id="float-le-int"),
        pytest.param("result == 1", 1.0, True, id="int-equals-float"),
        pytest.param("result != 1", 1.5, True, id="not-equal"),
        pytest.param("1 < 2 < 3", None, True, id="chained-comparison"),
        pytest.param("1 < 3 < 2", None, False, id="chained-comparison-false"),
        pytest.param("result == nil", None, True, id="nil-equals-nil"),
        pytest.param("result != nil", 0.0, True, id="zero-is-not-nil"),
        pytest.param("result == 'ok'", "ok", True, id="string-equality"),
        pytest.param("result < 'b'", "a", True, id="string-ordering"),
        pytest.param("result == 1", True, False, id="bool-is-not-one"),
        pytest.param("result == '1'", 1, False, id="int-is-not-string"),
        pytest.param("result == [1, 2]", [1, 2], True, id="array-equality"),
        pytest.param("result == {a: 1}", {"a": 1}, True, id="map-equality"),
        pytest.param("result > 0.5 && result < 1", 0.7, True, id="and"),
        pytest.param("result > 0.5 and result < 0.6", 0.7, False, id="and-keyword"),
        pytest.param("result < 0.5 || result > 0.6", 0.7, True, id="or"),
        pytest.param("result < 0.5 or result > 0.9", 0.7, False, id="or-keyword"),
        pytest.param("!(result > 1)", 0.5, True, id="bang"),
        pytest.param("not result", False, True, id="not-keyword"),
        pytest.param("result == nil || result > 1", None, True, id="or-short-circuits"),
        pytest.param("result != nil && result > 1", None, False, id="and-short-circuits"),
        pytest.param("(result ?? 0) > 1", None, False, id="coalesce-then-compare"),
        pytest.param("result == result", NAN, False, id="nan-not-equal-itself"),
        pytest.param("result < 1", NAN, False, id="nan-less-false"),
        pytest.param("result > 1", NAN, False, id="nan-greater-false"),
        pytest.param("result >= 1", NAN, False, id="nan-ge-false"),
        pytest.param("result > 1e308", INF, True, id="inf-greater"),
        pytest.param("result < -1e308", -INF, True, id="neg-inf-less"),
        pytest.param("result == result", INF, True, id="inf-equals-itself"),
    ],
)
def test_conditions(expression: str, result: object, expected: bool) -> None:
    assert evaluate_condition(expression, result) is expected


@pytest.mark.parametrize(
    ("expression", "result", "expected"),
    [
        pytest.param("result contains 'ell'", "hello", True, id="contains"),
        pytest.param("result not contains 'xyz'", "hello", True, id="not-contains"),
        pytest.param("result startsWith 'he'", "hello", True, id="startsWith"),
        pytest.param("result not startsWith 'lo'", "hello", True, id="not-startsWith"),
        pytest.param("result endsWith 'lo'", "hello", True, id="endsWith"),
        pytest.param("result not endsWith 'he'", "hello", True, id="not-endsWith"),
        pytest.param("result matches '^2..$'", "200", True, id="matches"),
        pytest.param("result matches '^2..$'", "2000", False, id="matches-anchored"),
        pytest.param("result not matches '^5'", "200", True, id="not-matches"),
        pytest.param("result matches '(?i)^OK$'", "ok", True, id="matches-case-insensitive-flag"),
        pytest.param("result matches '\\\\d+'", "abc123", True, id="matches-escape-d"),
        pytest.param("result matches '^(a+)+$'", "a" * 50 + "!", False, id="matches-no-catastrophic-backtracking"),
        pytest.param("result matches 'a$'", "a\n", False, id="dollar-is-end-of-text-like-re2"),
        pytest.param("'a' in result", ["a", "b"], True, id="in-array"),
        pytest.param("1 in result", [1.0, 2.0], True, id="in-array-numeric-equality"),
        pytest.param("'c' not in result", ["a", "b"], True, id="not-in-array"),
        pytest.param("'k' in result", {"k": None}, True, id="in-map-keys"),
        pytest.param("'z' in result", {"k": 1}, False, id="not-key-of-map"),
        pytest.param("'a' in result", None, False, id="in-nil-is-false"),
        pytest.param("2 in 1..3", None, True, id="in-range"),
    ],
)
def test_string_and_membership_operators(expression: str, result: object, expected: bool) -> None:
    assert evaluate_condition(expression, result) is expected


@pytest.mark.parametrize(
    ("expression", "result", "message"),
    [
        pytest.param("result > 1", None, "invalid operation: nil > int", id="nil-ordering-is-error"),
        pytest.param("result < 'a'", 1, "invalid operation: int < string", id="number-vs-string-ordering"),
        pytest.param("result + 1", "a", "invalid operation: string + int", id="string-plus-int"),
        pytest.param("result % 2", 2.5, "% needs integers", id="float-modulo"),
        pytest.param("result % 0", 5, "integer divide by zero", id="modulo-by-zero"),
        pytest.param("-result", "a", "invalid operation: -string", id="negate-string"),
        pytest.param("!result", 1, "must be a bool", id="not-on-number"),
        pytest.param("result && true", 1, "must be a bool", id="and-on-number"),
        pytest.param("result ? 1 : 2", "yes", "must be a bool", id="ternary-non-bool"),
        pytest.param("result contains 1", "a", "needs two strings", id="contains-non-string"),
        pytest.param("1 in result", "abc", 'operator "in" not defined on string', id="in-on-string"),
        pytest.param("1.5..3", None, "a range needs integers", id="float-range"),
        pytest.param("1..1000000", None, "is too large", id="huge-range"),
        pytest.param("result matches '('", "x", "invalid regular expression", id="bad-regex"),
        pytest.param("result matches '(?=a)'", "a", "unsupported Perl syntax", id="lookahead-not-re2"),
        pytest.param("result ?? 1 + 1", None, "cannot be mixed with '??'", id="coalesce-mixing"),
    ],
)
def test_operator_errors(expression: str, result: object, message: str) -> None:
    with pytest.raises(ConditionError) as info:
        evaluate(expression, {"result": result})
    assert message in str(info.value)
    assert f'"{expression}"' in str(info.value) or expression.replace('"', '\\"') in str(info.value)

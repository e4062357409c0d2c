"""Member access, indexing, slicing, optional chaining and closures over lists and maps."""

from __future__ import annotations

import pytest

from rollouts.analysis.expr import ConditionError, evaluate, evaluate_condition

from .test_expr_basics import same

POINTS = [{"name": "a", "value": 0.5, "tags": {"zone": "x"}}, {"name": "b", "value": 2.0, "tags": {}}]


@pytest.mark.parametrize(
    ("expression", "result", "expected"),
    [
        pytest.param("result[0]", [0.1, 0.2], 0.1, id="index"),
        pytest.param("result[-1]", [0.1, 0.2], 0.2, id="negative-index"),
        pytest.param("result[1.9]", [0.1, 0.2], 0.2, id="float-index-truncates"),
        pytest.param("result.a", {"a": 1}, 1, id="member"),
        pytest.param("result['a']", {"a": 1}, 1, id="member-by-index"),
        pytest.param("result['dotted.key']", {"dotted.key": 3}, 3, id="dotted-key"),
        pytest.param("result.missing", {"a": 1}, None, id="missing-key-is-nil"),
        pytest.param("result.a.b.c", {"a": {"b": {"c": True}}}, True, id="nested-members"),
        pytest.param("result[0].tags.zone", POINTS, "x", id="index-then-members"),
        pytest.param("result?.a", None, None, id="optional-member-on-nil"),
        pytest.param("result?.a.b.c", None, None, id="optional-chain-short-circuits"),
        pytest.param("result?.[0]", None, None, id="optional-index-on-nil"),
        pytest.param("result?.a ?? 'fallback'", None, "fallback", id="optional-then-coalesce"),
        pytest.param("result.a?.b", {"a": None}, None, id="optional-in-the-middle"),
        pytest.param("result[1:3]", [1, 2, 3, 4], [2, 3], id="slice"),
        pytest.param("result[:2]", [1, 2, 3, 4], [1, 2], id="slice-open-start"),
        pytest.param("result[2:]", [1, 2, 3, 4], [3, 4], id="slice-open-end"),
        pytest.param("result[:]", [1, 2], [1, 2], id="slice-all"),
        pytest.param("result[1:-1]", [1, 2, 3, 4], [2, 3], id="slice-negative"),
        pytest.param("result[-10:10]", [1, 2], [1, 2], id="slice-clamped"),
        pytest.param("result[3:1]", [1, 2, 3, 4], [], id="slice-inverted-empty"),
        pytest.param("result[1:3]", "hello", "el", id="slice-string"),
        pytest.param("result[1]", "héllo", "é", id="index-string-by-character"),
        pytest.param("$env.result", 7, 7, id="env-variable"),
        pytest.param("'result' in $env", None, True, id="env-membership"),
    ],
)
def test_access(expression: str, result: object, expected: object) -> None:
    assert same(evaluate(expression, {"result": result}), expected)


@pytest.mark.parametrize(
    ("expression", "result", "message"),
    [
        pytest.param("result[0]", [], "index 0 out of range for a list of length 0", id="index-empty-list"),
        pytest.param("result[5]", [1, 2], "index 5 out of range for a list of length 2", id="index-out-of-range"),
        pytest.param("result[-3]", [1, 2], "index -3 out of range", id="negative-index-out-of-range"),
        pytest.param("result.a", None, "cannot fetch a from nil", id="member-of-nil"),
        pytest.param("result[0]", None, "cannot fetch 0 from nil", id="index-of-nil"),
        pytest.param("result.a.b", {"a": None}, "cannot fetch b from nil", id="member-of-nil-value"),
        pytest.param("result['x']", [1], "cannot index a array with a string", id="string-index-on-list"),
        pytest.param("result.a", 1.5, "cannot fetch a from float", id="member-of-number"),
        pytest.param("result[0:1]", 3, "cannot slice a int", id="slice-number"),
        pytest.param("result[[1]]", {"a": 1}, "cannot use a array as a map key", id="list-as-map-key"),
    ],
)
def test_access_errors(expression: str, result: object, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        evaluate(expression, {"result": result})


@pytest.mark.parametrize(
    ("expression", "result", "expected"),
    [
        pytest.param("all(result, {# > 0.9})", [0.95, 0.99], True, id="all-braces"),
        pytest.param("all(result, # > 0.9)", [0.95, 0.5], False, id="all-no-braces"),
        pytest.param("all(result, # > 0.9)", [], True, id="all-empty-true"),
        pytest.param("any(result, # > 0.9)", [0.1, 0.95], True, id="any"),
        pytest.param("any(result, # > 0.9)", [], False, id="any-empty-false"),
        pytest.param("none(result, # > 0.9)", [0.1, 0.2], True, id="none"),
        pytest.param("one(result, # > 0.9)", [0.1, 0.95], True, id="one"),
        pytest.param("one(result, # > 0.9)", [0.91, 0.95], False, id="one-two-matches"),
        pytest.param("all(result, .value > 0.1)", POINTS, True, id="field-shorthand"),
        pytest.param("any(result, #.name == 'b')", POINTS, True, id="pointer-member"),
        pytest.param("all(result, #index < 2)", [5, 6], True, id="index-pointer"),
        pytest.param("all(result, all(#, # > 0))", [[1, 2], [3]], True, id="nested-closures"),
        pytest.param("result | any(# == 2)", [1, 2], True, id="pipe-into-predicate"),
        pytest.param("count(result, # > 1) == 2", [1, 2, 3], True, id="count-in-condition"),
        pytest.param("len(filter(result, .value > 1)) == 1", POINTS, True, id="filter-len"),
    ],
)
def test_closure_conditions(expression: str, result: object, expected: bool) -> None:
    assert evaluate_condition(expression, result) is expected


@pytest.mark.parametrize(
    ("expression", "result", "expected"),
    [
        pytest.param("filter(result, # % 2 == 0)", [1, 2, 3, 4], [2, 4], id="filter"),
        pytest.param("filter(result, .value > 1)", POINTS, [POINTS[1]], id="filter-field"),
        pytest.param("map(result, # * 2)", [1, 2.5], [2, 5.0], id="map"),
        pytest.param("map(result, .name)", POINTS, ["a", "b"], id="map-field"),
        pytest.param("map(result, #index)", ["x", "y"], [0, 1], id="map-index"),
        pytest.param("count(result, # > 1)", [1, 2, 3], 2, id="count"),
        pytest.param("count(result)", [True, False, True], 2, id="count-bools"),
        pytest.param("sum(result)", [1, 2, 3], 6, id="sum-ints"),
        pytest.param("sum(result)", [1, 2.5], 3.5, id="sum-mixed"),
        pytest.param("sum(result)", [], 0, id="sum-empty"),
        pytest.param("sum(result, .value)", POINTS, 2.5, id="sum-with-predicate"),
        pytest.param("find(result, # > 1)", [1, 2, 3], 2, id="find"),
        pytest.param("find(result, # > 5)", [1, 2, 3], None, id="find-none-is-nil"),
        pytest.param("findIndex(result, # > 1)", [1, 2, 3], 1, id="findIndex"),
        pytest.param("findIndex(result, # > 5)", [1, 2, 3], -1, id="findIndex-missing"),
        pytest.param("findLast(result, # > 1)", [1, 2, 3], 3, id="findLast"),
        pytest.param("findLastIndex(result, # > 1)", [1, 2, 3], 2, id="findLastIndex"),
        pytest.param("groupBy(result, # % 2)", [1, 2, 3], {1: [1, 3], 0: [2]}, id="groupBy"),
        pytest.param("groupBy(result, .name)['a'][0].value", POINTS, 0.5, id="groupBy-field"),
        pytest.param("sortBy(result, .value, 'desc')[0].name", POINTS, "b", id="sortBy-desc"),
        pytest.param("sortBy(result, -#)", [1, 3, 2], [3, 2, 1], id="sortBy-expression"),
        pytest.param("reduce(result, #acc + #)", [1, 2, 3], 6, id="reduce"),
        pytest.param("reduce(result, #acc + #, 10)", [1, 2, 3], 16, id="reduce-initial"),
        pytest.param("reduce(result, #acc + #index, 0)", [7, 7, 7], 3, id="reduce-index"),
        pytest.param("map(filter(result, # > 1), {# * #})", [1, 2, 3], [4, 9], id="composed"),
    ],
)
def test_closure_values(expression: str, result: object, expected: object) -> None:
    assert same(evaluate(expression, {"result": result}), expected)


@pytest.mark.parametrize(
    ("expression", "result", "message"),
    [
        pytest.param("all(result, # > 1)", None, "all\\(\\) expects an array", id="all-over-nil"),
        pytest.param("map(result, #)", {"a": 1}, "map\\(\\) expects an array", id="map-over-map"),
        pytest.param("filter(result, #)", [1], "must return a bool, got int", id="filter-non-bool"),
        pytest.param("reduce(result, #acc + #)", [], "needs an initial value", id="reduce-empty"),
        pytest.param("map(result, #acc)", [1], "#acc is only available inside reduce", id="acc-outside-reduce"),
        pytest.param("sortBy(result, #, 'up')", [1], "invalid order", id="sortBy-bad-order"),
        pytest.param("groupBy(result, [#])", [1], "cannot use a array as a map key", id="groupBy-list-key"),
        pytest.param("sum(result)", ["a"], "invalid operation: int \\+ string", id="sum-strings"),
    ],
)
def test_closure_errors(expression: str, result: object, message: str) -> None:
    with pytest.raises(ConditionError, match=message):
        evaluate(expression, {"result": result})

"""The analysis condition language: expr-lang (v1.17) as used by Argo Rollouts.

AnalysisTemplate metrics decide success and failure with expressions such as
`result[0] >= 0.95` or `all(result, # < 500) && len(result) > 0`. Argo evaluates them with the Go
library expr-lang/expr, binding `result` to the provider's value and adding `asInt`, `asFloat`,
`isNaN`, `isInf`, `isNil` and `default`. This package re-implements that language: a hand-written
lexer and Pratt parser build a syntax tree that our own interpreter walks. Python's `eval`/`exec`
are never used, member access only reads map keys, and source size, nesting depth, evaluation
steps, ranges and string sizes are all bounded.

Public API:

- `evaluate_condition(expression, result, *, now=None) -> bool`: a metric's successCondition /
  failureCondition; a non-boolean outcome is an error.
- `evaluate(expression, env, *, now=None) -> object`: any expression over the given variables
  (used for range-query time expressions like `now() - duration("1h")`).
- `ConditionError`: the only exception either function raises; its message quotes the
  expression and says what went wrong and at which column.

`now` injects the clock behind `now()` (it should return a timezone-aware datetime; naive ones
are taken as UTC).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache

from .errors import ConditionError, ExprError, quote, where
from .interpreter import Interpreter
from .nodes import Node
from .parser import parse
from .values import Value, normalize, type_name

__all__ = ["ConditionError", "evaluate", "evaluate_condition"]

Clock = Callable[[], datetime]
_NIL_OR_EMPTY_HINT = "; the metric result is nil or empty"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=512)
def _parse_cached(expression: str) -> Node:
    return parse(expression)


def _nil_or_empty(value: object) -> bool:
    return value is None or (isinstance(value, list | tuple | dict) and len(value) == 0)


def _run(label: str, expression: str, env: Mapping[str, object], now: Clock | None, hint: str) -> Value:
    if not isinstance(expression, str):
        raise ConditionError(f"{label} must be a string, got {type(expression).__name__}", str(expression), None)
    try:
        tree = _parse_cached(expression)
    except ExprError as exc:
        message = f"{label} {quote(expression)} is invalid: {exc.message}{where(expression, exc.position)}"
        raise ConditionError(message, expression, exc.position) from None
    except RecursionError:
        raise ConditionError(f"{label} {quote(expression)} is invalid: it is nested too deeply", expression) from None
    except Exception as exc:  # last line of defence: nothing but ConditionError may escape
        message = f"{label} {quote(expression)} is invalid: internal error ({type(exc).__name__}: {exc})"
        raise ConditionError(message, expression) from None
    try:
        variables: dict[str, Value] = {}
        for name, value in env.items():
            if not isinstance(name, str):
                raise ExprError(f"variable names must be strings, got {type(name).__name__}")
            try:
                variables[name] = normalize(value)
            except ExprError as exc:
                raise ExprError(f"variable {name}: {exc.message}") from None
        return Interpreter(variables, now or _utc_now).eval(tree)
    except ExprError as exc:
        message = f"{label} {quote(expression)} failed: {exc.message}{where(expression, exc.position)}{hint}"
        raise ConditionError(message, expression, exc.position) from None
    except RecursionError:
        message = f"{label} {quote(expression)} failed: the values or expression are nested too deeply{hint}"
        raise ConditionError(message, expression) from None
    except Exception as exc:  # last line of defence: nothing but ConditionError may escape
        message = f"{label} {quote(expression)} failed: internal error ({type(exc).__name__}: {exc}){hint}"
        raise ConditionError(message, expression) from None


def evaluate(expression: str, env: Mapping[str, object], *, now: Clock | None = None) -> object:
    """Evaluate `expression` with the variables in `env`; raises ConditionError on any failure."""
    return _run("expression", expression, env, now, "")


def evaluate_condition(expression: str, result: object, *, now: Clock | None = None) -> bool:
    """Evaluate a metric condition over `result`; it must produce a bool."""
    hint = _NIL_OR_EMPTY_HINT if _nil_or_empty(result) else ""
    value = _run("condition", expression, {"result": result}, now, hint)
    if not isinstance(value, bool):
        message = f"condition {quote(expression)} returned {type_name(value)}, expected a bool{hint}"
        raise ConditionError(message, expression, None)
    return value

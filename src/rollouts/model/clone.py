"""A deep copy of the planner's pydantic models, the same as `model_copy(deep=True)` but faster.

Every reconcile copies the observed status before planning changes it (`Reconcile.status`), and
every store write copies the JSON it is given (so the caller's object and the stored one share
nothing; `copy.deepcopy` was ~55 µs of a status write).
pydantic's `__deepcopy__` goes through `copy.deepcopy` for each field, list and dict: in the
10,000-rollout benchmark that copy was about 140 µs of a ~2 ms reconcile (the largest single
cost of the planning core). The models hold only JSON-like values (str, int, float, bool,
None, lists, dicts and nested models), for which a direct walk does the same work without
`deepcopy`'s per-object dispatch.

The result is what `BaseModel.__deepcopy__` returns: a fresh instance of the same class with a
copied `__dict__`, `__pydantic_extra__` and `__pydantic_fields_set__`, private attributes
copied, and one memo over the whole walk, so an object referenced twice in the original is one
object, referenced twice, in the copy. Anything else (a tuple, a datetime, a model with its own
`__deepcopy__`, a subclass of dict or list) is handed to `copy.deepcopy` with the same memo.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

T = TypeVar("T")

# Immutable: shared, never copied (as `copy.deepcopy` does). bool is an int, but listed for clarity.
_ATOMIC: frozenset[type] = frozenset({str, int, float, bool, type(None)})
_set_attr = object.__setattr__


def deep_copy(value: T) -> T:
    """A deep copy of `value` (a pydantic model, usually), equal to `copy.deepcopy(value)`."""
    result: T = _copy(value, {})
    return result


def _copy(value: Any, memo: dict[int, Any]) -> Any:
    kind = type(value)
    if kind in _ATOMIC:
        return value
    known = memo.get(id(value), memo)
    if known is not memo:
        return known
    if kind is dict:
        out: dict[Any, Any] = {}
        memo[id(value)] = out
        for key, item in value.items():
            # Atomic keys and values inline: most values are None or strings, and a call per
            # value was most of the cost.
            out[key if type(key) in _ATOMIC else _copy(key, memo)] = (
                item if type(item) in _ATOMIC else _copy(item, memo)
            )
        return out
    if kind is list:
        items: list[Any] = []
        memo[id(value)] = items
        for item in value:
            items.append(item if type(item) in _ATOMIC else _copy(item, memo))
        return items
    if isinstance(value, BaseModel) and kind.__deepcopy__ is BaseModel.__deepcopy__:
        return _copy_model(value, memo)
    return copy.deepcopy(value, memo)


def _copy_model(model: BaseModel, memo: dict[int, Any]) -> BaseModel:
    """`BaseModel.__deepcopy__` (pydantic 2), with this module's walk for the values."""
    kind = type(model)
    out = kind.__new__(kind)
    memo[id(model)] = out
    fields = {}
    for name, item in model.__dict__.items():
        fields[name] = item if type(item) in _ATOMIC else _copy(item, memo)
    _set_attr(out, "__dict__", fields)
    extra = model.__pydantic_extra__
    _set_attr(out, "__pydantic_extra__", None if extra is None else _copy(extra, memo))
    _set_attr(out, "__pydantic_fields_set__", set(model.__pydantic_fields_set__))
    private = getattr(model, "__pydantic_private__", None)
    if private is None:
        _set_attr(out, "__pydantic_private__", None)
    else:
        kept = {k: v for k, v in private.items() if v is not PydanticUndefined}
        _set_attr(out, "__pydantic_private__", _copy(kept, memo))
    return out

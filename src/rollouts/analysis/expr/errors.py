"""Errors and resource limits of the condition language.

Why two exception types: the lexer, parser, interpreter and built-ins raise `ExprError`, which
carries only a message and a character offset. The public entry points catch it (and, as a last
line of defence, anything else) and re-raise a single `ConditionError` that quotes the whole
expression and says where the problem is. Callers therefore need to handle exactly one type.

Why the limits live here: every stage enforces a bound (source length, nesting depth, evaluation
steps, collection and string sizes) so that an AnalysisTemplate cannot make the controller spin or
run out of memory. Keeping the numbers together makes the policy easy to audit.
"""

from __future__ import annotations

MAX_EXPRESSION_LENGTH = 4096
"""Longest accepted source text, in characters."""

MAX_NESTING = 64
"""Deepest accepted syntax nesting (parentheses, unary chains, operator chains, calls)."""

MAX_STEPS = 300_000
"""Evaluation budget: one step per node visited plus one per element a built-in touches."""

MAX_RANGE = 100_000
"""Largest list that `a..b` may build."""

MAX_STRING_LENGTH = 1_000_000
"""Longest string an expression may build (concatenation, repeat, join, toJSON, ...)."""

MAX_VALUE_DEPTH = 64
"""Deepest nesting of lists/maps accepted as input or walked by formatting and equality."""

_QUOTE_LIMIT = 200


class ExprError(Exception):
    """Internal failure raised by every stage; `position` is a 0-based offset into the source."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class ConditionError(Exception):
    """The only exception the package lets escape.

    `expression` is the source text, `position` the 0-based character offset of the offending
    token or sub-expression (None when the failure is not tied to one place, e.g. a non-boolean
    result). The message quotes the expression, says what is wrong and gives the column
    (1-based, and the line too for multi-line expressions).
    """

    def __init__(self, message: str, expression: str, position: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.position = position

    def __reduce__(self) -> tuple[type[ConditionError], tuple[str, str, int | None]]:
        return (ConditionError, (self.message, self.expression, self.position))

    @property
    def column(self) -> int | None:
        """1-based column of `position` on its line, or None."""
        if self.position is None:
            return None
        line_start = self.expression.rfind("\n", 0, self.position) + 1
        return self.position - line_start + 1


def quote(expression: str) -> str:
    """Double-quoted, escaped form of `expression`, shortened when very long."""
    text = expression if len(expression) <= _QUOTE_LIMIT else expression[:_QUOTE_LIMIT] + "..."
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def where(expression: str, position: int | None) -> str:
    """` (at column N)` or ` (at line L, column N)` for a 0-based offset; empty when unknown."""
    if position is None:
        return ""
    position = max(0, min(position, len(expression)))
    line = expression.count("\n", 0, position) + 1
    column = position - (expression.rfind("\n", 0, position) + 1) + 1
    if "\n" in expression:
        return f" (at line {line}, column {column})"
    return f" (at column {column})"

"""Tokenizer for the expr-lang condition language.

Why hand-written: expr-lang's lexical rules have context-sensitive corners that a generic
regex-based tokenizer gets wrong, e.g. `1..3` (an integer followed by the range operator, not the
float `1.`), `.5` (a float), `a?.b` versus `a ? .5 : 1`, and `not in` / `not matches` being single
operators. A small explicit scanner keeps those rules readable and reports exact offsets.

Numbers are converted here (ints must fit in int64, like Go's `int`); strings are unescaped with
Go's rules (\\n, \\t, \\xNN, \\uNNNN, \\UNNNNNNNN, octal \\NNN, ...). Backtick strings are raw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .errors import ExprError

TokenKind = Literal["int", "float", "string", "ident", "op", "pointer", "eof"]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

KEYWORDS = frozenset({"in", "or", "and", "matches", "contains", "startsWith", "endsWith", "let", "if", "else"})
NEGATABLE = frozenset({"in", "matches", "contains", "startsWith", "endsWith"})
_TWO_CHAR = frozenset({"==", "!=", "<=", ">=", "&&", "||", "**", "??", "::", ".."})
_ONE_CHAR = frozenset("+-*/%^<>!=?:,.;|()[]{}")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    value: object
    pos: int
    end: int

    def describe(self) -> str:
        """How the token is named in error messages."""
        if self.kind == "eof":
            return "end of expression"
        if self.kind == "string":
            return f"string {self.value!r}"
        if self.kind == "pointer":
            return f"'#{self.value}'"
        if self.kind in ("int", "float"):
            return f"number {self.value!r}"
        return f"'{self.value}'"


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def tokenize(source: str) -> list[Token]:
    """Split `source` into tokens, ending with an `eof` token."""
    tokens: list[Token] = []
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if ch.isspace():
            i += 1
            continue
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                raise ExprError("unclosed comment", i)
            i = end + 2
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and source[i + 1].isdigit()):
            token, i = _scan_number(source, i)
            tokens.append(token)
            continue
        if ch in "\"'":
            value, end = _scan_string(source, i)
            tokens.append(Token("string", value, i, end))
            i = end
            continue
        if ch == "`":
            end = source.find("`", i + 1)
            if end < 0:
                raise ExprError("unterminated raw string (missing closing backtick)", i)
            tokens.append(Token("string", source[i + 1 : end], i, end + 1))
            i = end + 1
            continue
        if ch == "#":
            j = i + 1
            while j < n and _is_ident_char(source[j]):
                j += 1
            tokens.append(Token("pointer", source[i + 1 : j], i, j))
            i = j
            continue
        if _is_ident_char(ch):
            j = i
            while j < n and _is_ident_char(source[j]):
                j += 1
            word = source[i:j]
            if word == "not":
                token = _scan_not(source, i, j)
                tokens.append(token)
                i = j if token.value == "not" else _after_word(source, j)
                continue
            tokens.append(Token("op" if word in KEYWORDS else "ident", word, i, j))
            i = j
            continue
        if ch == "?" and source.startswith("?.", i) and not (i + 2 < n and source[i + 2].isdigit()):
            tokens.append(Token("op", "?.", i, i + 2))
            i += 2
            continue
        two = source[i : i + 2]
        if two in _TWO_CHAR:
            tokens.append(Token("op", two, i, i + 2))
            i += 2
            continue
        if ch in _ONE_CHAR:
            tokens.append(Token("op", ch, i, i + 1))
            i += 1
            continue
        raise ExprError(f"unexpected character {ch!r}", i)
    tokens.append(Token("eof", None, n, n))
    return tokens


def _after_word(source: str, j: int) -> int:
    """Offset just past the word that follows `not` (used for `not in`, `not matches`, ...)."""
    while j < len(source) and source[j].isspace():
        j += 1
    while j < len(source) and _is_ident_char(source[j]):
        j += 1
    return j


def _scan_not(source: str, start: int, end: int) -> Token:
    """`not` alone, or a combined `not in` / `not contains` / ... operator token."""
    j = end
    while j < len(source) and source[j].isspace():
        j += 1
    k = j
    while k < len(source) and _is_ident_char(source[k]):
        k += 1
    if k > j and source[j:k] in NEGATABLE:
        return Token("op", "not " + source[j:k], start, k)
    return Token("op", "not", start, end)


def _scan_number(source: str, start: int) -> tuple[Token, int]:
    n = len(source)
    i = start
    digits = "0123456789_"
    base_prefix = ""
    if source.startswith(("0x", "0X", "0o", "0O", "0b", "0B"), i):
        base_prefix = source[i + 1].lower()
        digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[base_prefix]
        i += 2
    while i < n and source[i] in digits:
        i += 1
    is_float = False
    if not base_prefix and i < n and source[i] == "." and not source.startswith("..", i):
        is_float = True
        i += 1
        while i < n and source[i] in digits:
            i += 1
    if not base_prefix and i < n and source[i] in "eE":
        is_float = True
        i += 1
        if i < n and source[i] in "+-":
            i += 1
        while i < n and source[i] in digits:
            i += 1
    if i < n and _is_ident_char(source[i]):
        raise ExprError(f"bad number syntax {source[start : i + 1]!r}", start)
    text = source[start:i]
    clean = text.replace("_", "")
    if "__" in text or text.endswith("_") or "_." in text or "._" in text:
        raise ExprError(f"bad number syntax {text!r}", start)
    if is_float:
        try:
            value = float(clean)
        except ValueError:
            raise ExprError(f"invalid float literal {text!r}", start) from None
        if math.isinf(value):
            raise ExprError(f"float literal {text!r} is too large", start)
        return Token("float", value, start, i), i
    try:
        number = int(clean, 0) if base_prefix else int(clean, 10)
    except ValueError:
        raise ExprError(f"invalid integer literal {text!r}", start) from None
    if number > INT64_MAX:
        raise ExprError(f"integer literal {text!r} is too large", start)
    return Token("int", number, start, i), i


def _scan_string(source: str, start: int) -> tuple[str, int]:
    quote_char = source[start]
    out: list[str] = []
    i = start + 1
    n = len(source)
    while i < n:
        ch = source[i]
        if ch == quote_char:
            return "".join(out), i + 1
        if ch == "\n":
            break
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            break
        esc = source[i + 1]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = source[i + 2 : i + 2 + width]
            if len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise ExprError(f"invalid escape sequence \\{esc} in string", i)
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ExprError(f"invalid unicode code point \\{esc}{digits} in string", i)
            out.append(chr(code))
            i += 2 + width
        elif esc in "01234567":
            digits = source[i + 1 : i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits) or int(digits, 8) > 255:
                raise ExprError("invalid octal escape sequence in string (use three digits, e.g. \\101)", i)
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise ExprError(f"invalid escape sequence \\{esc} in string", i)
    raise ExprError("unterminated string literal (missing closing quote)", start)

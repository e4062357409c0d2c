"""A small RE2-compatible regular-expression matcher for the `matches` operator.

Why not Python's `re`: it backtracks, so a pattern such as `(a+)+$` takes exponential time on a
short input: an AnalysisTemplate could stall the controller. Go's RE2 (which Argo uses) guarantees
linear time and has slightly different semantics (`\\d`, `\\w`, `\\s` are ASCII-only, `$` without
`(?m)` matches only at the very end, no backreferences or lookaround). This module parses RE2
syntax into a tiny instruction program and runs it as a Thompson/Pike NFA simulation: time is
O(len(text) * len(program)), and the caller's `tick` callback charges that work to the expression
step budget.

Only a yes/no unanchored search is needed, so no capture positions are tracked.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from .errors import ExprError

MAX_PATTERN_LENGTH = 1000
MAX_PROGRAM = 5000
MAX_REPEAT = 1000
_MAX_GROUP_NESTING = 40

_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_DIGIT = [("0", "9")]
_SPACE = [("\t", "\n"), ("\f", "\r"), (" ", " ")]
_WORD_RANGES = [("0", "9"), ("A", "Z"), ("_", "_"), ("a", "z")]
_POSIX: dict[str, list[tuple[str, str]]] = {
    "alnum": [("0", "9"), ("A", "Z"), ("a", "z")],
    "alpha": [("A", "Z"), ("a", "z")],
    "ascii": [("\x00", "\x7f")],
    "blank": [("\t", "\t"), (" ", " ")],
    "cntrl": [("\x00", "\x1f"), ("\x7f", "\x7f")],
    "digit": _DIGIT,
    "graph": [("!", "~")],
    "lower": [("a", "z")],
    "print": [(" ", "~")],
    "punct": [("!", "/"), (":", "@"), ("[", "`"), ("{", "~")],
    "space": [("\t", "\r"), (" ", " ")],
    "upper": [("A", "Z")],
    "word": _WORD_RANGES,
    "xdigit": [("0", "9"), ("A", "F"), ("a", "f")],
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}


@dataclass(frozen=True, slots=True)
class CharSet:
    """A set of characters: explicit ranges plus Unicode general categories, maybe negated."""

    ranges: tuple[tuple[str, str], ...]
    categories: tuple[str, ...] = ()
    negated: bool = False
    fold: bool = False

    def matches(self, ch: str) -> bool:
        hit = self._contains(ch)
        if not hit and self.fold:
            hit = self._contains(ch.lower()) or self._contains(ch.upper())
        return hit != self.negated

    def _contains(self, ch: str) -> bool:
        if any(lo <= ch <= hi for lo, hi in self.ranges):
            return True
        return bool(self.categories) and unicodedata.category(ch).startswith(self.categories)


# Parsed node kinds: ("set", CharSet) | ("cat", [..]) | ("alt", [..]) | ("rep", node, min, max|-1)
# | ("assert", kind) | ("empty",)
_Node = tuple[object, ...]


class _PatternParser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0
        self.depth = 0

    def error(self, message: str) -> ExprError:
        return ExprError(f"invalid regular expression {self.p!r}: {message}")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.p[j] if j < len(self.p) else ""

    def parse(self) -> _Node:
        node = self.alternation({"i": False, "s": False, "m": False})
        if self.i < len(self.p):
            raise self.error("unexpected )")
        return node

    def alternation(self, flags: dict[str, bool]) -> _Node:
        branches = [self.concat(flags)]
        while self.peek() == "|":
            self.i += 1
            branches.append(self.concat(flags))
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def concat(self, flags: dict[str, bool]) -> _Node:
        items: list[_Node] = []
        while self.i < len(self.p) and self.peek() not in "|)":
            atom = self.atom(flags)
            if atom is None:
                continue
            items.append(self.quantifiers(atom))
        if not items:
            return ("empty",)
        return items[0] if len(items) == 1 else ("cat", items)

    def quantifiers(self, atom: _Node) -> _Node:
        quantified = False
        while True:
            ch = self.peek()
            bounds: tuple[int, int] | None
            if ch in ("*", "+", "?"):
                self.i += 1
                bounds = {"*": (0, -1), "+": (1, -1), "?": (0, 1)}[ch]
            elif ch == "{":
                bounds = self.braces()
                if bounds is None:
                    return atom
            else:
                return atom
            if quantified:
                raise self.error("invalid nested repetition operator")
            if self.peek() == "?":
                self.i += 1  # lazy: irrelevant for a yes/no match
            atom = ("rep", atom, bounds[0], bounds[1])
            quantified = True

    def braces(self) -> tuple[int, int] | None:
        close = self.p.find("}", self.i)
        body = self.p[self.i + 1 : close] if close > 0 else ""
        lo_text, comma, hi_text = body.partition(",")
        if close < 0 or not lo_text.isdigit() or (hi_text and not hi_text.isdigit()):
            return None  # RE2 treats a malformed {..} as literal text
        lo = int(lo_text)
        hi = lo if not comma else (int(hi_text) if hi_text else -1)
        if lo > MAX_REPEAT or hi > MAX_REPEAT or (hi != -1 and hi < lo):
            raise self.error(f"invalid repeat count {{{body}}}")
        self.i = close + 1
        return lo, hi

    def atom(self, flags: dict[str, bool]) -> _Node | None:
        ch = self.p[self.i]
        self.i += 1
        if ch == "(":
            return self.group(flags)
        if ch == "[":
            return ("set", self.char_class(flags))
        if ch == ".":
            ranges = (("\x00", "\U0010ffff"),) if flags["s"] else (("\x00", "\t"), ("\x0b", "\U0010ffff"))
            return ("set", CharSet(ranges))
        if ch == "^":
            return ("assert", "bol" if flags["m"] else "bot")
        if ch == "$":
            return ("assert", "eol" if flags["m"] else "eot")
        if ch in "*+?":
            raise self.error(f"missing argument to repetition operator {ch}")
        if ch == "\\":
            return self.escape(flags, in_class=False)
        return ("set", CharSet(((ch, ch),), fold=flags["i"]))

    def group(self, flags: dict[str, bool]) -> _Node | None:
        self.depth += 1
        if self.depth > _MAX_GROUP_NESTING:
            raise self.error("groups are nested too deeply")
        inner_flags = dict(flags)
        if self.peek() == "?":
            if self.p.startswith(("?<=", "?<!"), self.i):
                raise self.error(f"invalid or unsupported Perl syntax ({self.p[self.i : self.i + 3]}")
            if self.p.startswith("?P<", self.i) or self.p.startswith("?<", self.i):
                end = self.p.find(">", self.i)
                if end < 0:
                    raise self.error("invalid named capture")
                self.i = end + 1
            else:
                j = self.i + 1
                enable = True
                while j < len(self.p) and self.p[j] not in ":)":
                    flag = self.p[j]
                    if flag == "-":
                        enable = False
                    elif flag in "ismU":
                        if flag != "U":
                            inner_flags[flag] = enable
                    else:
                        raise self.error(f"invalid or unsupported Perl syntax (?{flag}")
                    j += 1
                if j >= len(self.p):
                    raise self.error("missing closing )")
                self.i = j + 1
                if self.p[j] == ")":  # (?i) applies to the rest of the enclosing group
                    flags.update(inner_flags)
                    self.depth -= 1
                    return None
        node = self.alternation(inner_flags)
        if self.peek() != ")":
            raise self.error("missing closing )")
        self.i += 1
        self.depth -= 1
        return node

    def escape(self, flags: dict[str, bool], *, in_class: bool) -> _Node:
        if self.i >= len(self.p):
            raise self.error("trailing backslash at end of expression")
        ch = self.p[self.i]
        self.i += 1
        fold = flags["i"]
        if ch in "dDsSwW":
            ranges = {"d": _DIGIT, "s": _SPACE, "w": _WORD_RANGES}[ch.lower()]
            return ("set", CharSet(tuple(ranges), negated=ch.isupper()))
        if ch in "pP":
            return ("set", self.unicode_class(negated=ch == "P"))
        if not in_class and ch in "bBAz":
            return ("assert", {"b": "word", "B": "nonword", "A": "bot", "z": "eot"}[ch])
        if not in_class and ch == "Q":
            end = self.p.find("\\E", self.i)
            text = self.p[self.i :] if end < 0 else self.p[self.i : end]
            self.i = len(self.p) if end < 0 else end + 2
            return ("cat", [("set", CharSet(((c, c),), fold=fold)) for c in text]) if text else ("empty",)
        if ch in _ESCAPES:
            lit = _ESCAPES[ch]
        elif ch == "x":
            lit = self.hex_escape()
        elif ch in "01234567":
            digits = ch
            while len(digits) < 3 and self.peek() and self.peek() in "01234567":
                digits += self.p[self.i]
                self.i += 1
            if ch != "0" and len(digits) == 1:
                raise self.error(f"invalid escape sequence \\{ch} (backreferences are not supported)")
            lit = chr(int(digits, 8))
        elif not ch.isalnum():
            lit = ch
        else:
            raise self.error(f"invalid escape sequence \\{ch}")
        return ("set", CharSet(((lit, lit),), fold=fold))

    def hex_escape(self) -> str:
        if self.peek() == "{":
            end = self.p.find("}", self.i)
            digits = self.p[self.i + 1 : end] if end > 0 else ""
            self.i = end + 1 if end > 0 else self.i
        else:
            digits = self.p[self.i : self.i + 2]
            self.i += 2
        try:
            code = int(digits, 16)
            if len(digits) == 0 or code > 0x10FFFF:
                raise ValueError
            return chr(code)
        except ValueError:
            raise self.error("invalid escape sequence \\x") from None

    def unicode_class(self, *, negated: bool) -> CharSet:
        if self.peek() == "{":
            end = self.p.find("}", self.i)
            if end < 0:
                raise self.error("invalid character class range")
            name = self.p[self.i + 1 : end]
            self.i = end + 1
        else:
            name = self.peek()
            self.i += 1
        if name.startswith("^"):
            name, negated = name[1:], not negated
        if name == "Any":
            return CharSet((("\x00", "\U0010ffff"),), negated=negated)
        if not (1 <= len(name) <= 2 and name[0] in "CLMNPSZ" and name.isalpha()):
            raise self.error(f"unsupported Unicode class \\p{{{name}}} (use a general category such as L or Nd)")
        return CharSet((), categories=(name,), negated=negated)

    def char_class(self, flags: dict[str, bool]) -> CharSet:
        negated = self.peek() == "^"
        if negated:
            self.i += 1
        ranges: list[tuple[str, str]] = []
        categories: list[str] = []
        subtract: list[CharSet] = []
        first = True
        while True:
            if self.i >= len(self.p):
                raise self.error("missing closing ]")
            ch = self.p[self.i]
            if ch == "]" and not first:
                self.i += 1
                break
            first = False
            if self.p.startswith("[:", self.i):
                end = self.p.find(":]", self.i + 2)
                name = self.p[self.i + 2 : end] if end > 0 else ""
                negate_posix = name.startswith("^")
                ranges_for = _POSIX.get(name.lstrip("^"))
                if ranges_for is None:
                    raise self.error(f"invalid character class range [:{name}:]")
                self.i = end + 2
                if negate_posix:
                    subtract.append(CharSet(tuple(ranges_for)))
                else:
                    ranges.extend(ranges_for)
                continue
            if ch == "\\":
                self.i += 1
                node = self.escape(flags, in_class=True)
                charset = node[1]
                assert isinstance(charset, CharSet)
                if (
                    charset.negated
                    or charset.categories
                    or len(charset.ranges) != 1
                    or (charset.ranges[0][0] != charset.ranges[0][1])
                ):
                    if charset.negated:
                        subtract.append(CharSet(charset.ranges, charset.categories))
                    else:
                        ranges.extend(charset.ranges)
                        categories.extend(charset.categories)
                    continue
                lo = charset.ranges[0][0]
            else:
                lo = ch
                self.i += 1
            hi = lo
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                if self.peek() == "\\":
                    self.i += 1
                    node = self.escape(flags, in_class=True)
                    charset = node[1]
                    assert isinstance(charset, CharSet)
                    hi = charset.ranges[0][0] if charset.ranges else lo
                else:
                    hi = self.p[self.i]
                    self.i += 1
                if hi < lo:
                    raise self.error(f"invalid character class range {lo}-{hi}")
            ranges.append((lo, hi))
        if subtract:
            # A class mixing in negated members (e.g. [\D x]): fall back to an explicit predicate set.
            base = CharSet(tuple(ranges), tuple(categories), fold=flags["i"])
            return _UnionSet(base, tuple(subtract), negated)  # type: ignore[return-value]
        return CharSet(tuple(ranges), tuple(categories), negated=negated, fold=flags["i"])


class _UnionSet:
    """Characters in `base` or outside any of `excluded` sets (for classes like [^\\D] or [\\S,])."""

    def __init__(self, base: CharSet, excluded: tuple[CharSet, ...], negated: bool) -> None:
        self.base, self.excluded, self.negated = base, excluded, negated

    def matches(self, ch: str) -> bool:
        hit = self.base.matches(ch) or any(not s.matches(ch) for s in self.excluded)
        return hit != self.negated


# Instructions: ("char", matcher) | ("split", a, b) | ("jmp", a) | ("assert", kind) | ("match",)
_Inst = tuple[object, ...]


def _compile(node: _Node, prog: list[_Inst]) -> None:
    if len(prog) > MAX_PROGRAM:
        raise ExprError("regular expression is too large")
    kind = node[0]
    if kind == "set":
        prog.append(("char", node[1]))
    elif kind == "empty":
        return
    elif kind == "assert":
        prog.append(("assert", node[1]))
    elif kind == "cat":
        for child in node[1]:  # type: ignore[attr-defined]
            _compile(child, prog)
    elif kind == "alt":
        branches: list[_Node] = node[1]  # type: ignore[assignment]
        jumps: list[int] = []
        for child in branches[:-1]:
            split = len(prog)
            prog.append(("split", split + 1, -1))
            _compile(child, prog)
            jumps.append(len(prog))
            prog.append(("jmp", -1))
            prog[split] = ("split", split + 1, len(prog))
        _compile(branches[-1], prog)
        for j in jumps:
            prog[j] = ("jmp", len(prog))
    else:  # rep
        child, lo, hi = node[1], int(node[2]), int(node[3])  # type: ignore[call-overload]
        for _ in range(lo):
            _compile(child, prog)  # type: ignore[arg-type]
        if hi == -1:
            loop = len(prog)
            prog.append(("split", loop + 1, -1))
            _compile(child, prog)  # type: ignore[arg-type]
            prog.append(("jmp", loop))
            prog[loop] = ("split", loop + 1, len(prog))
        else:
            holes: list[int] = []
            for _ in range(hi - lo):
                holes.append(len(prog))
                prog.append(("split", len(prog) + 1, -1))
                _compile(child, prog)  # type: ignore[arg-type]
            for h in holes:
                prog[h] = ("split", h + 1, len(prog))


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> tuple[_Inst, ...]:
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ExprError(f"regular expression is too long (the limit is {MAX_PATTERN_LENGTH} characters)")
    prog: list[_Inst] = []
    _compile(_PatternParser(pattern).parse(), prog)
    prog.append(("match",))
    if len(prog) > MAX_PROGRAM:
        raise ExprError("regular expression is too large")
    return tuple(prog)


def _assert_ok(kind: object, text: str, i: int) -> bool:
    before = text[i - 1] if i > 0 else ""
    after = text[i] if i < len(text) else ""
    if kind == "bot":
        return i == 0
    if kind == "eot":
        return i == len(text)
    if kind == "bol":
        return i == 0 or before == "\n"
    if kind == "eol":
        return i == len(text) or after == "\n"
    boundary = (before in _WORD and before != "") != (after in _WORD and after != "")
    return boundary if kind == "word" else not boundary


def search(pattern: str, text: str, tick: Callable[[int], None]) -> bool:
    """True when `pattern` (RE2 syntax) matches anywhere in `text`; work is reported to `tick`."""
    prog = compile_pattern(pattern)

    def closure(states: list[int], seen: set[int], pc: int, i: int) -> bool:
        stack = [pc]
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            inst = prog[pc]
            op = inst[0]
            if op == "match":
                return True
            if op == "jmp":
                stack.append(int(inst[1]))  # type: ignore[call-overload]
            elif op == "split":
                stack.append(int(inst[2]))  # type: ignore[call-overload]
                stack.append(int(inst[1]))  # type: ignore[call-overload]
            elif op == "assert":
                if _assert_ok(inst[1], text, i):
                    stack.append(pc + 1)
            else:
                states.append(pc)
        return False

    current: list[int] = []
    seen: set[int] = set()
    for i in range(len(text) + 1):
        if closure(current, seen, 0, i):
            return True
        if i == len(text):
            return False
        tick(2 * len(current) + 2)  # each live state costs about two interpreter steps
        ch = text[i]
        nxt: list[int] = []
        nxt_seen: set[int] = set()
        for pc in current:
            matcher = prog[pc][1]
            if matcher.matches(ch) and closure(nxt, nxt_seen, pc + 1, i + 1):  # type: ignore[attr-defined]
                return True
        current, seen = nxt, nxt_seen
    return False

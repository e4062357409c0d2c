"""Request heads in the embedded proxy: what a head says (`RequestHead`), worked out once per
distinct head, and where a chunked request body ends (`ChunkedEnd`).

The client side (`proxy_http`) gives httptools no per-header callbacks (a Python call per header
was a large share of a proxied request's cost). A request head is cut out of the received bytes
instead: it ends at the first blank line, because llhttp, which still parses every byte, is
strict (CRLF line ends, no obs-fold, no space before the colon) and accepts no other head. The
head is then read here in one regular-expression pass (C code), like response heads in
`upstream`.

What a head says depends on nothing but its bytes, so the proxy keeps the analyses of recent
heads (`HeadMemo`, bounded). A client sending the same head again (a keep-alive client polling
an endpoint, a browser's repeated requests, a load generator) gets the work done once, and a
memoised head that arrives whole in one read and has no body is not even given to llhttp
again: llhttp's verdict on the same bytes, from the start of a message, is the same. (A client
can only hit an entry with a byte-identical head, so nothing of one client's request reaches
another's.)
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rollouts.platform.embedded.routing import Backend

__all__ = ["CONNECTION_OPTIONS", "ChunkedEnd", "HeadMemo", "RequestHead", "analyse_request_head", "connection_tokens"]

CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
"""Connection tokens that are options, not names of headers to drop."""


def connection_tokens(value: bytes, into: set[bytes] | None) -> set[bytes]:
    """The comma-separated tokens of a Connection header, lower case, added to `into`."""
    tokens = into if into is not None else set()
    for token in value.lower().split(b","):
        token = token.strip()
        if token:
            tokens.add(token)
    return tokens


# In a request's header block (each line preceded by CRLF), the lines the proxy must look at:
# hop-by-hop ones (removed), and Host, Content-Length, Expect and X-Forwarded-* (read; some kept).
# `split` cuts them out in one pass (C code), leaving [rest, name, value, rest, name, value, ...,
# rest]; the lookahead lets the engine skip the lines whose first letter cannot match.
_REQUEST_SPECIAL = re.compile(
    rb"\r\n(?=[cCeEhHkKpPtTuUxX])(?i:(connection|content-length|expect|host|keep-alive|proxy-[^:\r]*|te"
    rb"|trailer|transfer-encoding|upgrade|x-forwarded-(?:for|proto|host)))[ \t]*:[ \t]*([^\r]*)"
)

# What a special line is (by its lower-case name); absent: hop-by-hop, dropped (Keep-Alive,
# Proxy-*, TE, Trailer). The first four are forwarded as they are.
_DROP = 0
_HOST = 1
_LENGTH = 2
_XFP = 3
_XFH = 4
_CONNECTION = 5
_TRANSFER_ENCODING = 6
_EXPECT = 7
_XFF = 8
_UPGRADE = 9
_KINDS = {
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"x-forwarded-proto": _XFP,
    b"x-forwarded-host": _XFH,
    b"connection": _CONNECTION,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"expect": _EXPECT,
    b"x-forwarded-for": _XFF,
    b"upgrade": _UPGRADE,
}

MAX_MEMO_HEAD = 4096
"""Longer heads are analysed every time, not kept (bounds the memo's memory)."""


class HeaderBlock:
    """What the header lines of a request say (everything but the request line)."""

    # (slots, all set in `__init__`: a block is made once per distinct block, and read for every
    # request that has it, where reads of slots are the cheapest)
    __slots__ = (
        "chunked",
        "content_length",
        "expect_continue",
        "has_xfh",
        "has_xfp",
        "host",
        "kept",
        "named",
        "suffix",
        "tokens",
        "upgrade_header",
        "xff",
    )

    def __init__(self) -> None:
        self.host: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.upgrade_header = False
        self.has_xfp = False
        self.has_xfh = False
        self.tokens: frozenset[bytes] = frozenset()  # of Connection, lower case
        self.named = False  # Connection names headers (removed from `kept`)
        self.xff = b""  # the X-Forwarded-For values the request came with, joined
        self.kept = b""  # the forwarded header lines, each ending with CRLF
        self.suffix = b""  # what the proxy adds after X-Forwarded-For (without a missing Host)


def analyse_header_block(block: bytes) -> HeaderBlock:
    """`block`: a request head from the CRLF that ends its request line to its blank line."""
    b = HeaderBlock()
    parts = _REQUEST_SPECIAL.split(block)
    if len(parts) == 4 and parts[1].lower() == b"host":
        # The common block: a Host, nothing else the proxy must look at.
        host = b.host = parts[2].rstrip(b" \t")
        b.kept = block[2:-2]
        b.suffix = b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: " + host + b"\r\n"
        return b
    kept = [parts[0]]
    tokens: set[bytes] | None = None
    xff: list[bytes] = []
    for k in range(1, len(parts), 3):
        name = parts[k]
        value = parts[k + 1]
        kind = _KINDS.get(name.lower(), _DROP)
        if kind <= _XFH:
            if kind != _DROP:
                kept += (b"\r\n", name, b": ", value)
                if kind == _HOST:
                    b.host = value.rstrip(b" \t")
                elif kind == _LENGTH:
                    b.content_length = int(value)
                elif kind == _XFP:
                    b.has_xfp = True
                else:
                    b.has_xfh = True
        elif kind == _CONNECTION:
            tokens = connection_tokens(value, tokens)
        elif kind == _TRANSFER_ENCODING:
            b.chunked = True  # (llhttp refuses a request whose last coding is not chunked)
        elif kind == _EXPECT:
            b.expect_continue = value.rstrip(b" \t").lower() == b"100-continue"
        elif kind == _XFF:
            xff.append(value.rstrip(b" \t"))
        else:
            b.upgrade_header = True
        kept.append(parts[k + 2])
    lines = b"".join(kept)[2:-2]  # (without the first CRLF and the blank line)
    if tokens:
        b.tokens = frozenset(tokens)
        named = tokens - CONNECTION_OPTIONS
        if named:  # the headers that Connection names are hop-by-hop too
            b.named = True
            names = b"|".join(re.escape(t) for t in sorted(named))
            lines = re.sub(rb"(?:^|(?<=\n))(?:" + names + rb")[ \t]*:[^\r]*\r\n", b"", lines, flags=re.IGNORECASE)
    b.kept = lines
    b.xff = b", ".join(xff)
    suffix = b"" if b.has_xfp else b"X-Forwarded-Proto: http\r\n"
    if not b.has_xfh and b.host is not None:
        suffix += b"X-Forwarded-Host: " + b.host + b"\r\n"
    if b.chunked:
        suffix += b"Transfer-Encoding: chunked\r\n"
    b.suffix = suffix
    return b


class RequestHead:
    """What one request head says, and the head to forward without its X-Forwarded-For line.

    `key` is the head as received: the request line and the header lines, each ending with
    CRLF, and the blank line. The forwarded head is `prefix`, the X-Forwarded-For line,
    `suffix`, a Host line when the request has none, and the blank line (`forwarded`). Made by
    `request_head` (no `__init__`, like `HeaderBlock`).
    """

    key: bytes
    method: bytes
    url: bytes
    block: HeaderBlock
    prefix: bytes  # the request line (as HTTP/1.1) and the forwarded header lines
    is_head = False
    http11 = True  # (else the response says Connection explicitly)
    keep_alive = True  # what the client asks for (version and Connection), as llhttp decides it
    upgrade = False  # Upgrade with Connection: upgrade, or CONNECT (not proxied: see `proxy`)
    memo = False  # kept in the memo: only when complete in itself (no body, keep-alive, a Host)
    # copied from `block`, for the proxy's hot path
    host: bytes | None = None
    content_length: int | None = None
    chunked = False
    expect_continue = False
    suffix = b""
    xff = b""

    @property
    def connect(self) -> bool:
        return self.method == b"CONNECT"

    @property
    def has_xfp(self) -> bool:
        return self.block.has_xfp

    @property
    def has_xfh(self) -> bool:
        return self.block.has_xfh

    def forwarded(self, peer: bytes, backend: Backend) -> bytes:
        """The head to send to `backend` for a client at `peer`."""
        xff = self.xff + b", " + peer if self.xff else peer
        host = b"" if self.host is not None else b"Host: %b:%d\r\n" % (backend.host.encode("idna"), backend.port)
        return b"".join((self.prefix, b"X-Forwarded-For: ", xff, b"\r\n", self.suffix, host, b"\r\n"))

    def header_lines(self) -> list[tuple[bytes, bytes]]:
        """(name, value) of every header line as received (values without surrounding spaces)."""
        key = self.key
        block = key[key.find(b"\r\n") + 2 : -4]
        out = []
        if block:
            for line in block.split(b"\r\n"):
                name, _, value = line.partition(b":")
                out.append((name.strip(), value.strip(b" \t")))
        return out


# The request line, which llhttp checked: method, spaces, target, spaces, HTTP/x.y (none: 0.9).
_REQUEST_LINE = re.compile(rb"([^ ]+) +([^ \r]+)(?: +([A-Z]+/([0-9])\.([0-9])))? *\r\n")


def _take_block(h: RequestHead, block: HeaderBlock) -> None:
    """Copy onto the head what its header block says that the proxy reads per request."""
    h.host = block.host
    h.content_length = block.content_length
    h.chunked = block.chunked
    h.expect_continue = block.expect_continue
    h.suffix = block.suffix
    h.xff = block.xff


def request_head(key: bytes, block: HeaderBlock | None = None) -> RequestHead:
    """Read a head that llhttp accepted (`key`: request line, header lines, blank line); with
    `block`, the analysis of its header lines (`analyse_header_block`), already made."""
    line = _REQUEST_LINE.match(key)
    if line is None:  # (llhttp accepts nothing else)
        raise ValueError(f"not a request line: {key[:80]!r}")
    method, url, version, major, minor = line.groups(b"0")
    if block is None:
        block = analyse_header_block(key[line.end() - 2 :])
    h = RequestHead()
    h.key = key
    h.method = method
    h.url = url
    h.block = block
    # (every field read afterwards is set here, not left to the class defaults: CPython 3.11 does
    # not specialise a read that falls back to the class)
    h.is_head = method == b"HEAD"
    tokens = block.tokens
    h.http11 = version == b"HTTP/1.1"
    # keep-alive as llhttp decides it: x.y with x, y > 0 unless "close", older versions only
    # with "keep-alive"
    if major == b"0" or minor == b"0":
        h.keep_alive = b"keep-alive" in tokens
    else:
        h.keep_alive = b"close" not in tokens
    h.upgrade = method == b"CONNECT" or (block.upgrade_header and b"upgrade" in tokens)
    # forwarded as "method target HTTP/1.1"
    h.prefix = b"".join((method, b" ", url, b" HTTP/1.1\r\n", block.kept))
    _take_block(h, block)
    host = block.host
    h.memo = (
        h.http11
        and h.keep_alive
        and host is not None
        and len(key) <= MAX_MEMO_HEAD
        and not (block.chunked or block.content_length or block.expect_continue or h.upgrade or block.named)
    )
    return h


def analyse_request_head(key: bytes) -> RequestHead:
    """`request_head`, with the header lines analysed too."""
    return request_head(key)


class HeadMemo:
    """Analyses of recent request heads, by their bytes, and of their header blocks (which
    repeat more: a client sends the same headers to many URLs). At most `size` of each; each
    cleared when full."""

    __slots__ = ("blocks", "heads", "size")

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.heads: dict[bytes, RequestHead] = {}
        self.blocks: dict[bytes, HeaderBlock] = {}

    def analyse(self, key: bytes, remember: bool = True) -> RequestHead:
        """`request_head(key)`, from the memos when they have it. Without `remember`, the head
        is neither looked up nor kept (its header block still is)."""
        if remember:
            h = self.heads.get(key)
            if h is not None:
                return h
        line = key.split(b" ", 2)
        if len(line) != 3:  # ("GET /": HTTP/0.9)
            return request_head(key)
        method, url, rest = line
        canonical = rest[:10] == b"HTTP/1.1\r\n" and method and url  # "method target HTTP/1.1"
        end = len(method) + len(url) + 10 if canonical else key.find(b"\r\n")
        text = key[end:]
        block = self.blocks.get(text)
        if block is None:
            block = analyse_header_block(text)
            if len(text) <= MAX_MEMO_HEAD:
                if len(self.blocks) >= self.size:
                    self.blocks.clear()
                self.blocks[text] = block
        if not canonical or block.tokens:
            h = request_head(key, block)  # (the general case)
        else:
            # the common request line, and no Connection header
            h = RequestHead()
            h.key = key
            h.method = method
            h.url = url
            h.block = block
            h.prefix = key[: end + 2] + block.kept
            # (what is read afterwards is set, not left to the class defaults: CPython 3.11
            # does not specialise a read that falls back to the class)
            h.is_head = method == b"HEAD"
            h.http11 = h.keep_alive = True
            h.upgrade = method == b"CONNECT"
            _take_block(h, block)
            h.memo = (
                block.host is not None
                and len(key) <= MAX_MEMO_HEAD
                and not (block.chunked or block.content_length or block.expect_continue or h.upgrade)
            )
        if h.memo and remember:
            if len(self.heads) >= self.size:
                self.heads.clear()
            self.heads[key] = h
        return h


_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_MAX_LINE = 64 * 1024

# ChunkedEnd states
_SIZE = 0
_DATA = 1
_DATA_END = 2
_TRAILER = 3


class ChunkedEnd:
    """Where a chunked request body ends, from its bytes as they come.

    Only the framing is followed (sizes, CRLFs, trailer lines), to know where the next request
    begins in the same read; llhttp parses the same bytes, checks them and de-chunks them, and
    the proxy checks that llhttp saw the message end at the same place.
    """

    __slots__ = ("left", "line", "state")

    def __init__(self) -> None:
        self.state = _SIZE
        self.left = 0
        self.line = b""  # a size or trailer line begun in an earlier read

    def scan(self, data: bytes) -> int:
        """The offset in `data` just past the end of the body, or -1 when it goes on after.

        Raises ValueError on what is not chunked framing (llhttp refuses it too)."""
        pos = 0
        n = len(data)
        while pos < n:
            state = self.state
            if state in (_DATA, _DATA_END):
                take = min(self.left, n - pos)
                pos += take
                self.left -= take
                if self.left == 0:
                    if state == _DATA:
                        self.state = _DATA_END
                        self.left = 2  # the CRLF after the data
                    else:
                        self.state = _SIZE
                continue
            lf = data.find(b"\n", pos)
            if lf < 0:
                self.line += data[pos:]
                if len(self.line) > _MAX_LINE:
                    raise ValueError("chunk size or trailer line too long")
                return -1
            line = self.line + data[pos : lf + 1] if self.line else data[pos : lf + 1]
            self.line = b""
            pos = lf + 1
            if line[-2:-1] != b"\r":
                raise ValueError("chunked framing: a line does not end with CRLF")
            if state == _SIZE:
                size = line[:-2].split(b";", 1)[0]
                if _HEX.fullmatch(size) is None:
                    raise ValueError(f"chunked framing: bad chunk size {size[:20]!r}")
                self.left = int(size, 16)
                self.state = _DATA if self.left else _TRAILER
            elif line == b"\r\n":  # the blank line after the last chunk (and its trailers)
                return pos
        return -1

"""The `web` metric provider: call an HTTP endpoint and pick a value out of its JSON body.

Argo Rollouts' `provider.web` fields: `url`, `method` (GET by default, POST or PUT), `headers`
(`[{key, value}]`), `body` or `jsonBody` (POST/PUT only, not both; `jsonBody` also sets
`Content-Type: application/json` unless a header sets it), `timeoutSeconds` (default 10; 0 or
less means the default, as in Argo), `jsonPath` (Kubernetes JSONPath, default `{$}`) and
`insecure` (skip TLS verification).

The body is decoded as JSON and the first match of `jsonPath` is the result (numbers become
floats); a body that is not JSON is the result as a plain string (`jsonPath` is then ignored).
The measurement's text is the JSON encoding of the value as Go's encoding/json writes it
(`10`, `true`, `{"a":1}`), except that a string is stored as it is.

This module also holds the small HTTP helpers shared with the `prometheus` provider.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import ssl
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx

from rollouts.analysis.providers.base import ProviderError, ProviderResult
from rollouts.analysis.providers.jsonpath import JSONPathError, compile_jsonpath

__all__ = [
    "DEFAULT_JSON_PATH",
    "DEFAULT_WEB_TIMEOUT_SECONDS",
    "WebProvider",
    "describe_http_failure",
    "format_go_float",
    "go_json_text",
]

DEFAULT_WEB_TIMEOUT_SECONDS = 10.0
DEFAULT_JSON_PATH = "{$}"
_BODY_SNIPPET = 200


# -- helpers shared with the prometheus provider -----------------------------------------------------


def format_go_float(value: float) -> str:
    """`value` as Go's `strconv.FormatFloat(v, 'f', -1, 64)` writes it.

    The shortest representation that round-trips, never in exponent form: `10`, `0.5`,
    `1000000000000000000000`, `0.0000001`, `-0`, and `NaN`, `+Inf`, `-Inf`.
    This is how Prometheus (and Argo) write sample values.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(repr(float(value))).normalize(), "f")


def _go_json_float(value: float) -> str:
    """A float as Go's encoding/json writes it (`10`, `0.5`, `1e+21`, `1e-7`)."""
    if not math.isfinite(value):
        # encoding/json refuses these; keep them readable rather than failing.
        return format_go_float(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        mantissa, _, exponent = repr(float(value)).partition("e")
        if not exponent:
            mantissa, _, exponent = f"{value:e}".partition("e")
        sign = "-" if exponent.startswith("-") else "+"
        digits = exponent.lstrip("+-").lstrip("0") or "0"
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        return f"{mantissa}e{sign}{digits}"
    return format_go_float(value)


def _go_json(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_json_float(value)
    if isinstance(value, str):
        encoded = json.dumps(value, ensure_ascii=False)
        # Go escapes these for safe embedding in HTML.
        for raw, escaped in (
            ("<", "\\u003c"),
            (">", "\\u003e"),
            ("&", "\\u0026"),
            ("\u2028", "\\u2028"),
            ("\u2029", "\\u2029"),
        ):
            encoded = encoded.replace(raw, escaped)
        return encoded
    if isinstance(value, Mapping):
        # Go marshals a map with its keys sorted.
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_go_json(k)}:{_go_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    return _go_json(str(value))


def go_json_text(value: Any) -> str:
    """The measurement text for a web value: a string as it is, anything else as Go's JSON."""
    if isinstance(value, str):
        return value
    return _go_json(value)


def _root_cause(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        chain.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return chain


def describe_http_failure(exc: BaseException, *, timeout: float) -> str:
    """A short human reason for a failed HTTP exchange: `connection refused`, `timed out after 1s`..."""
    chain = _root_cause(exc)
    if any(isinstance(e, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError) for e in chain):
        return f"no answer within {format_go_float(timeout)}s (timeout)"
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return f"cannot resolve the host name ({e.strerror or e})"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({e.verify_message}); set insecure: true to skip it"
        if isinstance(e, ssl.SSLError):
            return f"TLS error ({e})"
        if isinstance(e, ConnectionResetError):
            return "connection reset by peer"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server closed the connection or answered with invalid HTTP ({exc})"
    text = str(exc)
    if "Connection refused" in text or "All connection attempts failed" in text:
        return "connection refused"
    return text or type(exc).__name__


def check_url(url: str, *, what: str, field: str) -> str:
    """`url` if it is an absolute http(s) URL, else a ProviderError naming `field`."""
    hint = f"set {field} to e.g. http://host:port"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProviderError(f"{what} address {url!r} is not an http(s) URL — {hint}")
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ProviderError(f"{what} address {url!r} is not a valid URL ({exc}) — {hint}") from None
    return url


def header_pairs(headers: Any, *, field: str) -> list[tuple[str, str]]:
    """`[{key, value}]` as (name, value) pairs (`name` is accepted for `key` as in Argo's docs)."""
    if headers is None:
        return []
    if not isinstance(headers, list):
        raise ProviderError(f"{field} must be a list of {{key, value}} objects")
    pairs: list[tuple[str, str]] = []
    for header in headers:
        if not isinstance(header, Mapping):
            raise ProviderError(f"{field} must be a list of {{key, value}} objects, got {header!r}")
        key = header.get("key") or header.get("name")
        if not key:
            raise ProviderError(f"{field} entry {dict(header)!r} has no key")
        value = header.get("value")
        pairs.append((str(key), "" if value is None else str(value)))
    return pairs


def body_snippet(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    if len(text) > _BODY_SNIPPET:
        text = text[:_BODY_SNIPPET] + "…"
    return text


class ClientPool:
    """One shared `httpx.AsyncClient` per TLS mode, created lazily (or the one injected)."""

    def __init__(self, client: httpx.AsyncClient | None) -> None:
        self._injected = client
        self._owned: dict[bool, httpx.AsyncClient] = {}

    def get(self, *, insecure: bool) -> httpx.AsyncClient:
        if self._injected is not None:
            return self._injected
        client = self._owned.get(insecure)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(verify=not insecure, follow_redirects=True)
            self._owned[insecure] = client
        return client

    async def aclose(self) -> None:
        """Close the clients this pool created (an injected client belongs to its owner)."""
        owned, self._owned = self._owned, {}
        for client in owned.values():
            await client.aclose()


def _numbers_as_float(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [_numbers_as_float(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers_as_float(v) for k, v in value.items()}
    return value


def _timeout_seconds(spec: Mapping[str, Any]) -> float:
    raw = spec.get("timeoutSeconds")
    if raw is None or raw == "":
        return DEFAULT_WEB_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise ProviderError(f"provider.web.timeoutSeconds must be a number of seconds, got {raw!r}") from None
    return seconds if seconds > 0 else DEFAULT_WEB_TIMEOUT_SECONDS


class WebProvider:
    """`provider.web`: one HTTP request per measurement; see the module docstring."""

    kind = "web"

    def __init__(self, *, client: httpx.AsyncClient | None = None) -> None:
        self._clients = ClientPool(client)

    async def aclose(self) -> None:
        await self._clients.aclose()

    async def measure(
        self, spec: dict[str, Any], *, now: datetime | None = None, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        url = str(spec.get("url") or "")
        if not url:
            raise ProviderError("provider.web.url is empty — set it to the endpoint to measure")
        check_url(url, what="web metric", field="provider.web.url")
        method = str(spec.get("method") or "GET").upper()
        if method not in ("GET", "POST", "PUT"):
            raise ProviderError(f"provider.web.method {method!r} is not supported — use GET, POST or PUT")
        timeout = _timeout_seconds(spec)
        headers = header_pairs(spec.get("headers"), field="provider.web.headers")
        try:
            parsed_path = compile_jsonpath(str(spec.get("jsonPath") or DEFAULT_JSON_PATH))
        except JSONPathError as exc:
            raise ProviderError(f"provider.web.jsonPath is invalid: {exc}") from None

        content: bytes | None = None
        body, json_body = spec.get("body"), spec.get("jsonBody")
        if body not in (None, "") or json_body is not None:
            if method == "GET":
                raise ProviderError("provider.web.body/jsonBody can only be sent with method POST or PUT — set method")
            if body not in (None, "") and json_body is not None:
                raise ProviderError("provider.web has both body and jsonBody — keep only one")
            if json_body is not None:
                content = (json_body if isinstance(json_body, str) else json.dumps(json_body)).encode()
                if not any(name.lower() == "content-type" for name, _ in headers):
                    headers.append(("Content-Type", "application/json"))
            else:
                content = str(body).encode()

        client = self._clients.get(insecure=bool(spec.get("insecure")))
        try:
            async with asyncio.timeout(timeout):
                response = await client.request(method, url, headers=headers, content=content, timeout=timeout)
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            reason = describe_http_failure(exc, timeout=timeout)
            raise ProviderError(
                f"web metric at {url} is unreachable: {reason} — check the metric's provider.web.url"
                " and that the endpoint is up"
                + (" (or raise provider.web.timeoutSeconds)" if "timeout" in reason else "")
            ) from None
        if not 200 <= response.status_code < 300:
            raise ProviderError(
                f"web metric at {url} answered HTTP {response.status_code} (expected 2xx): "
                f"{body_snippet(response) or '<empty body>'} — check the URL, method and headers"
            )
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            text = response.text
            return ProviderResult(value=text, text=text)
        matches = parsed_path.find(data)
        if not matches:
            raise ProviderError(
                f"web metric at {url}: jsonPath {parsed_path.source} matched nothing in the body "
                f"{body_snippet(response)} — fix provider.web.jsonPath"
            )
        value = matches[0]
        return ProviderResult(value=_numbers_as_float(value), text=go_json_text(value))

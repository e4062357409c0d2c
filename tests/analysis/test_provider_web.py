"""The web provider against loopback HTTP stand-ins."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from rollouts.analysis.providers import ProviderError, WebProvider
from rollouts.analysis.providers.web import go_json_text
from tests.support.prometheus import BlackholeServer, StubHTTPServer, unused_port


def now() -> datetime:
    return datetime.now(UTC)


async def test_get_json_with_json_path(stub_server: StubHTTPServer, web_provider: WebProvider) -> None:
    stub_server.respond(200, {"data": {"ok": True, "rate": 0.97, "count": 12}})
    result = await web_provider.measure(
        {
            "url": stub_server.url + "/metrics?service=canary",
            "jsonPath": "{$.data.rate}",
            "headers": [{"key": "Authorization", "value": "Bearer abc"}],
        },
        now=now(),
    )
    assert result.value == 0.97
    assert result.text == "0.97"
    [request] = stub_server.requests
    assert request.method == "GET"
    assert request.path == "/metrics?service=canary"
    assert request.headers["authorization"] == "Bearer abc"
    assert request.body == b""


@pytest.mark.parametrize(
    ("json_path", "value", "text"),
    [
        pytest.param("{$.data.ok}", True, "true", id="bool"),
        pytest.param("{.data.count}", 12.0, "12", id="int-becomes-float"),
        pytest.param("{$.data.name}", "canary", "canary", id="string-raw"),
        pytest.param("{$.items[1].value}", 2.5, "2.5", id="index"),
        pytest.param("{$.items[*].value}", 1.0, "1", id="first-of-many"),
        pytest.param("{$.data.none}", None, "null", id="null"),
        pytest.param(
            "{$.data}",
            {"ok": True, "count": 12.0, "name": "canary", "none": None},
            '{"count":12,"name":"canary","none":null,"ok":true}',
            id="object-keys-sorted",
        ),
        pytest.param("{$.items[0]}", {"value": 1.0}, '{"value":1}', id="object-from-list"),
    ],
)
async def test_json_path_values(
    stub_server: StubHTTPServer, web_provider: WebProvider, json_path: str, value: Any, text: str
) -> None:
    stub_server.respond(
        200,
        {
            "data": {"ok": True, "count": 12, "name": "canary", "none": None},
            "items": [{"value": 1}, {"value": 2.5}],
        },
    )
    result = await web_provider.measure({"url": stub_server.url, "jsonPath": json_path}, now=now())
    assert result.value == value
    assert result.text == text


async def test_default_json_path_is_whole_document(stub_server: StubHTTPServer, web_provider: WebProvider) -> None:
    stub_server.respond(200, [1, 2])
    result = await web_provider.measure({"url": stub_server.url}, now=now())
    assert result.value == [1.0, 2.0]
    assert result.text == "[1,2]"


async def test_post_with_json_body(stub_server: StubHTTPServer, web_provider: WebProvider) -> None:
    stub_server.respond(200, {"status": "ok"})
    result = await web_provider.measure(
        {
            "url": stub_server.url + "/check",
            "method": "POST",
            "jsonBody": {"service": "canary", "window": 5},
            "jsonPath": "{.status}",
        },
        now=now(),
    )
    assert result.value == "ok"
    assert result.text == "ok"
    [request] = stub_server.requests
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"service": "canary", "window": 5}


async def test_put_with_plain_body_keeps_given_content_type(
    stub_server: StubHTTPServer, web_provider: WebProvider
) -> None:
    stub_server.respond(200, {"v": 1})
    await web_provider.measure(
        {
            "url": stub_server.url,
            "method": "put",
            "body": "service=canary",
            "headers": [{"key": "Content-Type", "value": "application/x-www-form-urlencoded"}],
            "jsonPath": "{$.v}",
        },
        now=now(),
    )
    [request] = stub_server.requests
    assert request.method == "PUT"
    assert request.body == b"service=canary"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"


async def test_non_2xx(stub_server: StubHTTPServer, web_provider: WebProvider) -> None:
    stub_server.respond(503, "upstream down")
    with pytest.raises(ProviderError) as caught:
        await web_provider.measure({"url": stub_server.url + "/health"}, now=now())
    message = str(caught.value)
    assert f"web metric at {stub_server.url}/health answered HTTP 503 (expected 2xx): upstream down" in message


async def test_no_match(stub_server: StubHTTPServer, web_provider: WebProvider) -> None:
    stub_server.respond(200, {"data": {}})
    with pytest.raises(ProviderError, match=r"jsonPath \{\$\.data\.missing\} matched nothing.*provider\.web\.jsonPath"):
        await web_provider.measure({"url": stub_server.url, "jsonPath": "{$.data.missing}"}, now=now())


async def test_non_json_body_is_a_string(stub_server: StubHTTPServer, web_provider: WebProvider) -> None:
    stub_server.respond(200, "all good\n", content_type="text/plain")
    result = await web_provider.measure({"url": stub_server.url, "jsonPath": "{$.ignored}"}, now=now())
    assert result.value == "all good\n"
    assert result.text == "all good\n"


async def test_timeout(blackhole: BlackholeServer, web_provider: WebProvider) -> None:
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await web_provider.measure({"url": blackhole.url, "timeoutSeconds": 1}, now=now())
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"web metric at {blackhole.url} is unreachable: no answer within 1s (timeout)" in message
    assert "timeoutSeconds" in message


async def test_unreachable(web_provider: WebProvider) -> None:
    url = f"http://127.0.0.1:{unused_port()}/x"
    with pytest.raises(ProviderError, match=rf"web metric at {url} is unreachable: connection refused"):
        await web_provider.measure({"url": url}, now=now())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"url": ""}, r"url is empty", id="no-url"),
        pytest.param({"url": "example.com/x"}, r"not an http\(s\) URL", id="not-a-url"),
        pytest.param({"url": "http://127.0.0.1:port/x"}, r"not a valid URL", id="bad-port"),
        pytest.param({"url": "http://127.0.0.1:9", "method": "DELETE"}, r"'DELETE' is not supported", id="method"),
        pytest.param(
            {"url": "http://127.0.0.1:9", "body": "x"}, r"only be sent with method POST or PUT", id="get-body"
        ),
        pytest.param(
            {"url": "http://127.0.0.1:9", "method": "POST", "body": "x", "jsonBody": {}},
            r"both body and jsonBody",
            id="both-bodies",
        ),
        pytest.param({"url": "http://127.0.0.1:9", "jsonPath": "{$.a[}"}, r"jsonPath is invalid", id="bad-path"),
    ],
)
async def test_invalid_spec(web_provider: WebProvider, spec: dict[str, Any], expected: str) -> None:
    with pytest.raises(ProviderError, match=expected):
        await web_provider.measure(spec, now=now())


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param("raw <text>", "raw <text>", id="string-raw"),
        pytest.param(10.0, "10", id="integral-float"),
        pytest.param(1e21, "1e+21", id="large-exponent"),
        pytest.param(1e-7, "1e-7", id="small-exponent"),
        pytest.param(False, "false", id="bool"),
        pytest.param(None, "null", id="null"),
        pytest.param({"b": [1.5, "<x>"], "a": 1}, '{"a":1,"b":[1.5,"\\u003cx\\u003e"]}', id="nested"),
        pytest.param(math.nan, "NaN", id="nan-readable"),
    ],
)
def test_go_json_text(value: Any, text: str) -> None:
    assert go_json_text(value) == text

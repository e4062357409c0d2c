"""`{{args.*}}` substitution into metrics and resolution of a run's args.

Covers: whitespace inside braces, JSON-string escaping of quotes/newlines/backslashes, every
string field reached (query, headers, conditions, count), unknown and unclosed tags, run args
from values and from secrets (with the names reported for redaction), missing secrets and
args, and redaction.
"""

from __future__ import annotations

import pytest

from rollouts.analysis.args import redact, resolve_run_args, substitute_args, substitute_text
from rollouts.analysis.errors import AnalysisArgError
from rollouts.model.analysis import AnalysisRun, AnalysisRunSpec, Argument, Metric
from rollouts.model.meta import ObjectMeta


def web_metric(url: str, **fields: object) -> Metric:
    return Metric.model_validate({"name": "m", "provider": {"web": {"url": url}}, **fields})


@pytest.mark.parametrize(
    ("template", "args", "expected"),
    [
        pytest.param("http://{{args.host}}/x", {"host": "svc"}, "http://svc/x", id="plain"),
        pytest.param("http://{{ args.host }}/x", {"host": "svc"}, "http://svc/x", id="whitespace"),
        pytest.param("{{args.a}}-{{args.b}}", {"a": "1", "b": "2"}, "1-2", id="two"),
        pytest.param('say "{{args.q}}"', {"q": 'a"b'}, 'say "a"b"', id="quote"),
        pytest.param("{{args.v}}", {"v": "line1\nline2\ttab\\"}, "line1\nline2\ttab\\", id="controls"),
        pytest.param("no tags", {}, "no tags", id="no-tags"),
        pytest.param("{single}", {}, "{single}", id="single-braces"),
    ],
)
def test_substitute_args_in_url(template: str, args: dict[str, str], expected: str) -> None:
    resolved = substitute_args(web_metric(template), args)
    assert resolved.provider["web"]["url"] == expected


def test_substitute_text_escapes_for_json() -> None:
    assert substitute_text('"{{args.v}}"', {"v": 'a"b\nc'}) == '"a\\"b\\nc"'
    assert substitute_text("{{args.v}}", {"v": 'a"b'}, escape=False) == 'a"b'


def test_substitute_args_reaches_every_string_field() -> None:
    m = Metric.model_validate(
        {
            "name": "rate-{{args.svc}}",
            "interval": "{{args.every}}",
            "count": "{{args.count}}",
            "successCondition": "result[0] >= {{args.threshold}}",
            "provider": {
                "prometheus": {
                    "query": 'sum(rate(http_requests_total{service="{{args.svc}}"}[5m]))',
                    "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}],
                }
            },
        }
    )
    args = {"svc": "api", "every": "30s", "count": "4", "threshold": "0.95", "token": "t0k"}
    resolved = substitute_args(m, args)
    assert resolved.name == "rate-api"
    assert resolved.interval == "30s"
    assert resolved.count == "4"
    assert resolved.success_condition == "result[0] >= 0.95"
    assert resolved.provider["prometheus"]["query"] == 'sum(rate(http_requests_total{service="api"}[5m]))'
    assert resolved.provider["prometheus"]["headers"][0]["value"] == "Bearer t0k"
    assert m.provider["prometheus"]["headers"][0]["value"] == "Bearer {{args.token}}"  # input untouched


@pytest.mark.parametrize(
    ("template", "args", "message"),
    [
        pytest.param("{{args.missing}}", {}, "failed to resolve {{args.missing}}", id="unknown-arg"),
        pytest.param("{{ args.missing }}", {}, "failed to resolve {{ args.missing }}", id="unknown-keeps-spaces"),
        pytest.param("{{inputs.x}}", {"x": "1"}, "failed to resolve {{inputs.x}}", id="not-args"),
        pytest.param("{{args.a}} {{args.b}}", {"a": "1"}, "failed to resolve {{args.b}}", id="second"),
        # In the metric's JSON text the object's closing braces end the tag, as in Argo.
        pytest.param("{{args.a", {"a": "1"}, 'failed to resolve {{args.a"}}', id="unclosed-in-json"),
    ],
)
def test_substitute_args_errors(template: str, args: dict[str, str], message: str) -> None:
    with pytest.raises(AnalysisArgError) as info:
        substitute_args(web_metric(template), args)
    assert str(info.value).startswith(message)


def test_substitute_text_unclosed_tag() -> None:
    with pytest.raises(AnalysisArgError, match=r"^cannot find end tag '}}' after '{{args.a'"):
        substitute_text("x {{args.a", {"a": "1"})


def run_with(args: list[Argument], namespace: str | None = "team") -> AnalysisRun:
    return AnalysisRun(
        metadata=ObjectMeta(name="r", namespace=namespace),
        spec=AnalysisRunSpec(metrics=[web_metric("http://x")], args=args),
    )


def secret_arg(name: str, secret: str, key: str) -> Argument:
    return Argument.model_validate({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})


def test_resolve_run_args_values_and_secrets() -> None:
    seen: list[tuple[str, str, str]] = []

    def secrets(namespace: str, name: str, key: str) -> str | None:
        seen.append((namespace, name, key))
        return {"token": "s3cret"}.get(key)

    values, from_secrets = resolve_run_args(
        run_with([Argument(name="svc", value="api"), secret_arg("token", "creds", "token")]), secrets
    )
    assert values == {"svc": "api", "token": "s3cret"}
    assert from_secrets == {"token"}
    assert seen == [("team", "creds", "token")]


def test_resolve_run_args_without_args() -> None:
    assert resolve_run_args(run_with([]), lambda ns, n, k: None) == ({}, set())


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        pytest.param(
            secret_arg("token", "creds", "api-key"),
            "args.token: key 'api-key' does not exist in secret 'creds' (namespace 'team')",
            id="missing-secret",
        ),
        pytest.param(Argument(name="svc"), 'argument "svc" was not supplied: give args.svc a value', id="no-value"),
        pytest.param(
            Argument.model_validate({"name": "ns", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
            'argument "ns" was not supplied: valueFrom.fieldRef (metadata.namespace)',
            id="field-ref",
        ),
    ],
)
def test_resolve_run_args_errors(arg: Argument, message: str) -> None:
    with pytest.raises(AnalysisArgError) as info:
        resolve_run_args(run_with([arg]), lambda ns, n, k: None)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        pytest.param("token s3cret rejected", {"s3cret"}, "token ***** rejected", id="one"),
        pytest.param("ab abc", {"ab", "abc"}, "***** *****", id="longest-first"),
        pytest.param("nothing here", {""}, "nothing here", id="empty-secret-ignored"),
    ],
)
def test_redact(text: str, secrets: set[str], expected: str) -> None:
    assert redact(text, secrets) == expected

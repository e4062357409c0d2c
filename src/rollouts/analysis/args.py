"""`{{args.NAME}}` substitution into metrics, and resolution of a run's args (secrets).

Why it works on JSON text: Argo Rollouts marshals each metric to JSON, replaces every
`{{...}}` tag in that text and unmarshals the result, so a placeholder may sit in any string
field (query, url, header value, condition, even `count: "{{args.count}}"`). Values are
JSON-string-escaped before insertion, so quotes or newlines in a value cannot break the
document. Whitespace inside the braces is ignored (`{{ args.name }}`); any tag that is not a
known arg is an error (`failed to resolve {{args.missing}}`), which the runner turns into a run
in phase Error.

Secret-backed args (`valueFrom.secretKeyRef`) are resolved when the run is reconciled, from
the run's namespace, through a callable the caller injects; the names of those args are
returned so the runner can redact their values (`*****`) from messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import pydantic

from rollouts.analysis.errors import AnalysisArgError
from rollouts.model.analysis import AnalysisRun, Metric

__all__ = ["REDACTED", "SecretLookup", "redact", "resolve_run_args", "substitute_args", "substitute_text"]

REDACTED = "*****"

SecretLookup = Callable[[str, str, str], str | None]
"""`secrets(namespace, name, key)`: the secret's value for `key`, or None when absent."""

_OPEN = "{{"
_CLOSE = "}}"


def _json_escape(value: str) -> str:
    """The body of a JSON string literal for `value` (quotes, backslashes, controls escaped)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def substitute_text(template: str, args: Mapping[str, str], *, escape: bool = True) -> str:
    """Replace every `{{ args.NAME }}` tag in `template`.

    With `escape`, values are JSON-string-escaped (the text is a JSON document). Raises
    `AnalysisArgError` for an unknown tag or a `{{` without its closing `}}`.
    """
    out: list[str] = []
    pos = 0
    while True:
        start = template.find(_OPEN, pos)
        if start < 0:
            out.append(template[pos:])
            return "".join(out)
        end = template.find(_CLOSE, start + len(_OPEN))
        if end < 0:
            snippet = template[start : start + 40]
            raise AnalysisArgError(
                f"cannot find end tag {_CLOSE!r} after {snippet!r}: close the placeholder as '{{{{args.NAME}}}}'"
            )
        tag = template[start + len(_OPEN) : end]
        cleaned = tag.strip()
        name = cleaned[len("args.") :] if cleaned.startswith("args.") else None
        if name is None or name not in args:
            raise AnalysisArgError(f"failed to resolve {{{{{tag}}}}}")
        value = args[name]
        out.append(template[pos:start])
        out.append(_json_escape(value) if escape else value)
        pos = end + len(_CLOSE)


def substitute_args(metric: Metric, args: Mapping[str, str]) -> Metric:
    """A copy of `metric` with `{{args.NAME}}` replaced everywhere in its JSON form."""
    text = json.dumps(metric.to_json(), ensure_ascii=False)
    if _OPEN not in text:
        return metric.model_copy(deep=True)
    resolved = substitute_text(text, args, escape=True)
    try:
        return Metric.model_validate(json.loads(resolved))
    except (ValueError, pydantic.ValidationError) as exc:  # pragma: no cover - escaping keeps JSON valid
        raise AnalysisArgError(f"metric {metric.name!r}: invalid after substituting args: {exc}") from exc


def resolve_run_args(run: AnalysisRun, secrets: SecretLookup) -> tuple[dict[str, str], set[str]]:
    """The run's args as `name -> value`, plus the names whose value came from a Secret.

    A `valueFrom.secretKeyRef` is read from the run's namespace (it wins over `value`, as in
    Argo). An arg with neither a value nor a secret is an error naming the arg and the fix.
    """
    namespace = run.metadata.namespace or "default"
    values: dict[str, str] = {}
    from_secrets: set[str] = set()
    for arg in run.spec.args or []:
        ref = arg.value_from.secret_key_ref if arg.value_from is not None else None
        if ref is not None:
            secret_value = secrets(namespace, ref.name, ref.key)
            if secret_value is None:
                raise AnalysisArgError(
                    f"args.{arg.name}: key '{ref.key}' does not exist in secret '{ref.name}' "
                    f"(namespace {namespace!r}): create the secret with that key or fix "
                    f"args.{arg.name}.valueFrom.secretKeyRef"
                )
            values[arg.name] = secret_value
            from_secrets.add(arg.name)
        elif arg.value is not None:
            values[arg.name] = arg.value
        elif arg.value_from is not None and arg.value_from.field_ref is not None:
            raise AnalysisArgError(
                f'argument "{arg.name}" was not supplied: valueFrom.fieldRef '
                f"({arg.value_from.field_ref.field_path}) is resolved only by the Rollout that "
                f"creates the run; give args.{arg.name} a value"
            )
        else:
            raise AnalysisArgError(f'argument "{arg.name}" was not supplied: give args.{arg.name} a value')
    return values, from_secrets


def redact(text: str, secret_values: set[str] | frozenset[str]) -> str:
    """`text` with every non-empty secret value replaced by `*****` (longest first)."""
    for secret in sorted((s for s in secret_values if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text

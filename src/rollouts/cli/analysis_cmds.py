"""AnalysisRun commands, shaped like `kubectl argo rollouts create|terminate analysisrun`.

- `create analysisrun --from TEMPLATE [--global] | --from-file FILE` builds a run from a stored
  AnalysisTemplate (a ClusterAnalysisTemplate with `--global`; nested `spec.templates` refs
  are read from the store too) and the `-a NAME=VALUE` args, and writes it to the store; the
  running controller measures it. The name is `--name`, or `--generate-name PREFIX` plus five
  random characters, or by default the template's name plus `-` and five random characters.
- `get analysisrun NAME [--watch]` shows the run the way `kubectl describe analysisrun` does,
  but readable: phase, message, summaries, args, then each metric (args substituted, secrets
  as `*****`) with its provider, limits, counters and measurements (time, phase, value,
  message).
- `list analysisruns [-A]`: NAME STATUS AGE ROLLOUT (the `rollout` label of runs the controller
  created for a rollout).
- `terminate analysisrun NAME` sets `spec.terminate` (in-flight metrics end, the run completes).

Errors are one line `error: …`, exit code 1, through `rollouts.cli.main`'s `fail`/`open_store`.
They are imported when a command runs, not when this module loads: `main` imports this module
to register the commands.

Registration (in `rollouts.cli.main`, after the groups are defined):

    from rollouts.cli.analysis_cmds import register_analysis_commands
    register_analysis_commands(cli, get=get, list_=list_)
"""

from __future__ import annotations

import re
import secrets
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from rollouts.analysis.args import REDACTED, substitute_args
from rollouts.analysis.build import build_analysis_run, flatten_templates
from rollouts.analysis.errors import AnalysisArgError, AnalysisBuildError
from rollouts.core.durations import format_duration
from rollouts.core.timeutil import parse_rfc3339
from rollouts.model.analysis import (
    COMPLETED_PHASES,
    AnalysisRun,
    AnalysisTemplate,
    Argument,
    ClusterAnalysisTemplate,
    Measurement,
    Metric,
    MetricResult,
    RunSummary,
)
from rollouts.model.rollout import AnalysisTemplateRef
from rollouts.store.sqlite import AlreadyExistsError, SqliteStore

__all__ = [
    "create",
    "create_analysisrun",
    "get_analysisrun",
    "list_analysisruns",
    "register_analysis_commands",
    "render_analysis_run",
    "render_analysis_run_list",
    "terminate",
    "terminate_analysisrun",
]

Obj = dict[str, Any]
Template = AnalysisTemplate | ClusterAnalysisTemplate

ROLLOUT_LABEL = "rollout"
RUN_TYPE_LABEL = "rollout-type"
STEP_INDEX_LABEL = "step-index"
INSTANCE_ID_LABEL = "argo-rollouts.argoproj.io/controller-instance-id"  # what --instance-id controllers select

ICONS = {
    "Successful": "✔",
    "Running": "◌",
    "Pending": "◌",
    "Failed": "✖",
    "Error": "⚠",
    "Inconclusive": "⚠",
}

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' generateName alphabet
_RESOLVED_QUERY = "ResolvedPrometheusQuery"
_WATCH_POLL_SECONDS = 0.5


# -- shared with rollouts.cli.main (imported late: main imports this module) ---------------------------


def fail(message: str) -> NoReturn:
    from rollouts.cli.main import fail as main_fail

    main_fail(message)


@contextmanager
def _store(ctx: click.Context) -> Iterator[SqliteStore]:
    from rollouts.cli.main import open_store

    with open_store(ctx) as store:
        yield store


def _namespace(ctx: click.Context, namespace: str | None) -> str:
    return namespace or str((ctx.obj or {}).get("namespace") or "default")


_namespace_option = click.option(
    "-n", "--namespace", default=None, help="Namespace of the run (default: the global -n/--namespace)."
)


# -- create ------------------------------------------------------------------------------------------


@click.group()
def create() -> None:
    """Create an object (analysisrun)."""


def _parse_args(assignments: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name.strip():
            fail(f"-a/--argument expects NAME=VALUE, got {assignment!r} (e.g. -a service-name=checkout)")
        values[name.strip()] = value
    return values


def _template_kind(cluster: bool) -> str:
    return "ClusterAnalysisTemplate" if cluster else "AnalysisTemplate"


def _parse_template(raw: Obj, cluster: bool, name: str) -> Template:
    model = ClusterAnalysisTemplate if cluster else AnalysisTemplate
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        fail(f'{_template_kind(cluster)} "{name}" is invalid: {where}: {first["msg"]} (fix it and apply it again)')


def _stored_template(store: SqliteStore, name: str, *, cluster: bool, namespace: str) -> Template | None:
    raw = store.get(_template_kind(cluster), name, namespace)
    return None if raw is None else _parse_template(raw, cluster, name)


def _template_from_file(path: str) -> Template:
    from rollouts.model.manifests import load_files

    docs, findings = load_files([path])
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        fail(str(errors[0]))
    templates = [d.resource for d in docs if isinstance(d.resource, AnalysisTemplate | ClusterAnalysisTemplate)]
    if len(templates) != 1:
        fail(f"{path} holds {len(templates)} AnalysisTemplates/ClusterAnalysisTemplates: --from-file needs exactly one")
    return templates[0]


def _run_name(name: str | None, generate_name: str | None, default_prefix: str) -> tuple[str, bool]:
    """(name, generated): `--name` as given, else a prefix plus five random characters."""
    if name is not None and generate_name is not None:
        fail("--name and --generate-name cannot be used together")
    if name is not None:
        if len(name) > 253 or not _NAME.match(name):
            fail(f"--name {name!r} is not a valid name (lower-case letters, digits, '-' and '.'; e.g. smoke-test-1)")
        return name, False
    prefix = generate_name if generate_name is not None else f"{default_prefix}-"
    if not prefix or len(prefix) > 247 or not _NAME.match(prefix.rstrip("-.") or "x"):
        fail(f"--generate-name {prefix!r} is not a valid name prefix (e.g. smoke-test-)")
    return prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5)), True


@create.command("analysisrun")
@click.option("--from", "from_", metavar="TEMPLATE", default=None, help="Create from this AnalysisTemplate.")
@click.option(
    "--from-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Create from the (Cluster)AnalysisTemplate in this file.",
)
@click.option("--global", "global_", is_flag=True, help="--from names a ClusterAnalysisTemplate.")
@click.option("-a", "--argument", "arguments", multiple=True, metavar="NAME=VALUE", help="Argument (repeatable).")
@click.option("--name", default=None, help="Name of the run.")
@click.option("--generate-name", default=None, metavar="PREFIX", help="Name the run PREFIX + 5 random characters.")
@click.option("--instance-id", default=None, help="Label the run for the controller instance with this id.")
@_namespace_option
@click.pass_context
def create_analysisrun(
    ctx: click.Context,
    from_: str | None,
    from_file: str | None,
    global_: bool,
    arguments: tuple[str, ...],
    name: str | None,
    generate_name: str | None,
    instance_id: str | None,
    namespace: str | None,
) -> None:
    """Create an AnalysisRun from a template; the controller runs it."""
    from rollouts.model.validate_analysis import validate_analysis_run

    if (from_ is None) == (from_file is None):
        fail("give exactly one of --from TEMPLATE and --from-file FILE")
    ns = _namespace(ctx, namespace)
    values = _parse_args(arguments)
    with _store(ctx) as store:
        if from_ is not None:
            template = _stored_template(store, from_, cluster=global_, namespace=ns)
            if template is None:
                where = "" if global_ else f' in namespace "{ns}"'
                hint = "" if global_ else " (or add --global for a ClusterAnalysisTemplate)"
                fail(f'{_template_kind(global_)} "{from_}" not found{where}: create it with `rollouts apply -f`{hint}')
        else:
            assert from_file is not None
            template = _template_from_file(from_file)

        def lookup(ref: AnalysisTemplateRef) -> Template | None:
            return _stored_template(store, ref.template_name, cluster=bool(ref.cluster_scope), namespace=ns)

        try:
            flat = flatten_templates([template], lookup)
        except AnalysisBuildError as exc:
            fail(str(exc))
        _check_args(flat, values)
        run_name, generated = _run_name(name, generate_name, template.metadata.name)
        labels = {INSTANCE_ID_LABEL: instance_id} if instance_id else {}
        for _ in range(5):
            try:
                run = build_analysis_run(
                    name=run_name,
                    namespace=ns,
                    templates=[template],
                    args=[Argument(name=k, value=v) for k, v in values.items()],
                    lookup=lookup,
                    labels=labels,
                )
            except AnalysisBuildError as exc:
                fail(str(exc))
            errors = [f for f in validate_analysis_run(run) if f.severity == "error"]
            if errors:
                fail(f"the run would be invalid: {errors[0].path}: {errors[0].message}")
            try:
                store.create(run.to_json())
            except AlreadyExistsError:
                if not generated:
                    fail(f'analysisrun "{run_name}" already exists in namespace "{ns}": choose another --name')
                run_name, _ = _run_name(None, generate_name, template.metadata.name)
                continue
            break
        else:
            fail("could not find a free generated name: try again")
    click.echo(f"analysisrun.argoproj.io/{run_name} created")


def _check_args(templates: Sequence[Template], values: Mapping[str, str]) -> None:
    """Every -a names a declared arg, and every declared arg without a value gets one."""
    declared: dict[str, Argument] = {}
    origin: dict[str, Template] = {}
    for template in templates:
        for arg in template.spec.args or []:
            if arg.name not in declared or (declared[arg.name].value is None and declared[arg.name].value_from is None):
                declared[arg.name] = arg
                origin[arg.name] = template
    for name in values:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            fail(f"argument {name!r} is not declared by the template (it declares: {known})")
    for name, arg in declared.items():
        if name not in values and arg.value is None and arg.value_from is None:
            template = origin[name]
            fail(f'argument {name!r} is required by {template.kind} "{template.metadata.name}": pass -a {name}=VALUE')


# -- get ---------------------------------------------------------------------------------------------


def _icon(phase: str) -> str:
    return ICONS.get(phase, "?")


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    return format_duration(max(0.0, (now - moment).total_seconds()))


def _when(text: str | None, now: datetime) -> str:
    moment = parse_rfc3339(text)
    if moment is None or text is None:
        return "-"
    return f"{text} ({_ago(moment, now)} ago)"


def _summary(summary: RunSummary | None) -> str:
    s = summary or RunSummary()
    return (
        f"count {s.count or 0}, successful {s.successful or 0}, failed {s.failed or 0}, "
        f"inconclusive {s.inconclusive or 0}, error {s.error or 0}"
    )


def _indent(text: str, prefix: str) -> list[str]:
    lines = text.splitlines() or [""]
    return [lines[0], *(prefix + line for line in lines[1:])]


def _field(label: str, value: str, *, width: int, indent: str) -> list[str]:
    """`label:` padded to `width`, then `value`; continuation lines aligned under the value."""
    head = f"{indent}{label + ':':<{width}}"
    first, *rest = _indent(value.strip(), " " * len(head))
    return [f"{head}{first}".rstrip(), *rest]


def _arg_text(arg: Argument) -> str:
    if arg.value is not None:
        return arg.value
    if arg.value_from is not None and arg.value_from.secret_key_ref is not None:
        ref = arg.value_from.secret_key_ref
        return f"<secret {ref.name}, key {ref.key}>"
    if arg.value_from is not None and arg.value_from.field_ref is not None:
        return f"<field {arg.value_from.field_ref.field_path}>"
    return "<unset>"


def _provider_lines(metric: Metric, result: MetricResult | None, indent: str) -> list[str]:
    kinds = list(metric.provider)
    kind = kinds[0] if len(kinds) == 1 else ", ".join(kinds) or "(none)"
    spec: Any = metric.provider.get(kind) if len(kinds) == 1 else None
    lines = _field("Provider", kind, width=15, indent=indent)
    metadata = (result.metadata if result is not None else None) or {}
    if not isinstance(spec, Mapping):
        return lines
    if kind == "prometheus":
        if spec.get("address"):
            lines += _field("Address", str(spec["address"]), width=15, indent=indent)
        query = metadata.get(_RESOLVED_QUERY) or str(spec.get("query") or "")
        lines += _field("Query", query, width=15, indent=indent)
    elif kind == "web":
        lines += _field("URL", f"{spec.get('method') or 'GET'} {spec.get('url') or ''}", width=15, indent=indent)
        if spec.get("jsonPath"):
            lines += _field("JSONPath", str(spec["jsonPath"]), width=15, indent=indent)
    elif kind == "job":
        job_spec = spec.get("spec")
        template = job_spec.get("template") if isinstance(job_spec, Mapping) else None
        pod = template.get("spec") if isinstance(template, Mapping) else None
        containers = pod.get("containers") if isinstance(pod, Mapping) else None
        if isinstance(containers, list) and containers and isinstance(containers[0], Mapping):
            first = containers[0]
            argv = [str(p) for p in [*(first.get("command") or []), *(first.get("args") or [])]]
            lines += _field("Command", " ".join(argv) or "<none>", width=15, indent=indent)
    return lines


def _limits(metric: Metric) -> str:
    parts = [
        f"interval {metric.interval}" if metric.interval else "single measurement",
        f"count {metric.count}" if metric.count is not None else "",
        f"initialDelay {metric.initial_delay}" if metric.initial_delay else "",
        f"failureLimit {metric.failure_limit if metric.failure_limit is not None else 0}",
        f"inconclusiveLimit {metric.inconclusive_limit if metric.inconclusive_limit is not None else 0}",
        f"consecutiveErrorLimit {metric.consecutive_error_limit if metric.consecutive_error_limit is not None else 4}",
    ]
    if metric.consecutive_success_limit is not None:
        parts.append(f"consecutiveSuccessLimit {metric.consecutive_success_limit}")
    return ", ".join(p for p in parts if p)


def _counters(result: MetricResult) -> str:
    return (
        f"count {result.count or 0}, successful {result.successful or 0}, failed {result.failed or 0}, "
        f"inconclusive {result.inconclusive or 0}, error {result.error or 0}, "
        f"consecutiveError {result.consecutive_error or 0}, consecutiveSuccess {result.consecutive_success or 0}"
    )


def _measurement_rows(measurements: Sequence[Measurement], indent: str) -> list[str]:
    rows = [("TIME", "PHASE", "VALUE", "MESSAGE")]
    messages: list[list[str]] = [[]]
    for m in measurements:
        moment = m.finished_at or f"{m.started_at or '-'} (running)"
        message_lines = (m.message or "").strip().splitlines()
        rows.append((moment, f"{_icon(m.phase)} {m.phase}", m.value if m.value not in (None, "") else "-", ""))
        messages.append(message_lines)
    widths = [max(len(row[c]) for row in rows) + 2 for c in range(3)]
    lines: list[str] = []
    for row, message in zip(rows, messages, strict=True):
        text = row[3] or (message[0] if message else "")
        head = f"{indent}{row[0]:<{widths[0]}}{row[1]:<{widths[1]}}{row[2]:<{widths[2]}}"
        lines.append(f"{head}{text}".rstrip())
        pad = " " * len(head)
        lines += [f"{pad}{line}".rstrip() for line in message[1:]]
    return lines


def _with_args(metric: Metric, args: Sequence[Argument]) -> Metric:
    """`metric` as measured: args substituted, secrets shown as `*****` (as written, if one is missing)."""
    values = {arg.name: REDACTED if arg.value_from is not None else arg.value for arg in args}
    try:
        return substitute_args(metric, {k: v for k, v in values.items() if v is not None})
    except AnalysisArgError:
        return metric


def render_analysis_run(raw: Obj, now: datetime | None = None) -> str:
    """`get analysisrun` text for a stored run (see the module docstring)."""
    now = now or datetime.now(UTC)
    run = AnalysisRun.model_validate(raw)
    status = run.status
    meta = run.metadata
    phase = (status.phase if status is not None else None) or "Pending"
    labels = meta.labels or {}
    width = 17
    lines = _field("Name", meta.name, width=width, indent="")
    lines += _field("Namespace", meta.namespace or "default", width=width, indent="")
    lines += _field("Status", f"{_icon(phase)} {phase}", width=width, indent="")
    if status is not None and status.message:
        lines += _field("Message", status.message, width=width, indent="")
    if labels.get(ROLLOUT_LABEL):
        owner = labels[ROLLOUT_LABEL]
        details = [labels[RUN_TYPE_LABEL]] if labels.get(RUN_TYPE_LABEL) else []
        if labels.get(STEP_INDEX_LABEL):
            details.append(f"step {labels[STEP_INDEX_LABEL]}")
        lines += _field("Rollout", owner + (f" ({', '.join(details)})" if details else ""), width=width, indent="")
    if run.spec.terminate:
        lines += _field("Terminate", "requested", width=width, indent="")
    lines += _field("Created", _when(meta.creation_timestamp, now), width=width, indent="")
    if status is not None and status.started_at:
        lines += _field("Started", _when(status.started_at, now), width=width, indent="")
    if status is not None and status.completed_at:
        lines += _field("Completed", _when(status.completed_at, now), width=width, indent="")
    if status is not None and status.run_summary is not None:
        lines += _field("Run Summary", _summary(status.run_summary), width=width, indent="")
    if status is not None and status.dry_run_summary is not None and (status.dry_run_summary.count or 0) > 0:
        lines += _field("Dry-Run Summary", _summary(status.dry_run_summary), width=width, indent="")
    if run.spec.args:
        lines.append("Args:")
        arg_width = max(len(arg.name) for arg in run.spec.args) + 3
        for arg in run.spec.args:
            lines += _field(arg.name, _arg_text(arg), width=arg_width, indent="  ")
    results = {r.name: r for r in (status.metric_results if status is not None else None) or []}
    dry_run_names = {rule.metric_name for rule in run.spec.dry_run or []}
    lines.append("Metrics:")
    for spec_metric in run.spec.metrics:
        metric = _with_args(spec_metric, run.spec.args or [])
        result = results.get(metric.name)
        metric_phase = result.phase if result is not None else "Pending"
        dry = " (dry-run)" if (result is not None and result.dry_run) or metric.name in dry_run_names else ""
        lines.append(f"  {_icon(metric_phase)} {metric.name}{dry}")
        indent = "    "
        lines += _field("Phase", metric_phase, width=15, indent=indent)
        if result is not None and result.message:
            lines += _field("Message", result.message, width=15, indent=indent)
        lines += _provider_lines(metric, result, indent)
        conditions = []
        if metric.success_condition:
            conditions.append(f"success: {metric.success_condition}")
        if metric.failure_condition:
            conditions.append(f"failure: {metric.failure_condition}")
        if conditions:
            lines += _field("Conditions", "; ".join(conditions), width=15, indent=indent)
        lines += _field("Limits", _limits(metric), width=15, indent=indent)
        if result is None:
            lines.append(f"{indent}No measurements yet.")
            continue
        lines += _field("Counters", _counters(result), width=15, indent=indent)
        extra = {k: v for k, v in (result.metadata or {}).items() if not k.startswith(_RESOLVED_QUERY)}
        if extra:
            lines += _field(
                "Metadata", ", ".join(f"{k}={v}" for k, v in sorted(extra.items())), width=15, indent=indent
            )
        if result.measurements:
            lines.append(f"{indent}Measurements:")
            lines += _measurement_rows(result.measurements, indent + "  ")
        else:
            lines.append(f"{indent}No measurements yet.")
    return "\n".join(lines)


def _get_run(store: SqliteStore, name: str, namespace: str) -> Obj:
    raw = store.get("AnalysisRun", name, namespace)
    if raw is None:
        fail(f'analysisrun "{name}" not found in namespace "{namespace}" (see `rollouts list analysisruns`)')
    return raw


def _render(raw: Obj) -> str:
    try:
        return render_analysis_run(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        fail(f'analysisrun "{raw["metadata"].get("name")}" cannot be shown: {where}: {first["msg"]}')


@click.command("analysisrun")
@click.argument("name")
@click.option("-w", "--watch", is_flag=True, help="Redraw on every change until the run completes.")
@click.option("--timeout-seconds", type=float, default=0, help="With --watch: stop after this long (0 = never).")
@_namespace_option
@click.pass_context
def get_analysisrun(ctx: click.Context, name: str, watch: bool, timeout_seconds: float, namespace: str | None) -> None:
    """Show an AnalysisRun: its verdict, and each metric's measurements."""
    ns = _namespace(ctx, namespace)
    with _store(ctx) as store:
        deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
        last = None
        while True:
            raw = _get_run(store, name, ns)
            text = _render(raw)
            if not watch:
                click.echo(text)
                return
            if text != last:
                click.echo("\x1b[2J\x1b[H" + text if sys.stdout.isatty() else text + "\n")
                last = text
            if (raw.get("status") or {}).get("phase") in COMPLETED_PHASES:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(_WATCH_POLL_SECONDS)


# -- list --------------------------------------------------------------------------------------------


def render_analysis_run_list(runs: Sequence[Obj], *, all_namespaces: bool, now: datetime | None = None) -> str:
    """`list analysisruns` table: [NAMESPACE] NAME STATUS AGE ROLLOUT."""
    now = now or datetime.now(UTC)
    header = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "STATUS", "AGE", "ROLLOUT"]
    rows = [header]
    for raw in runs:
        meta = raw.get("metadata") or {}
        phase = str((raw.get("status") or {}).get("phase") or "Pending")
        age = _ago(parse_rfc3339(meta.get("creationTimestamp")), now) or "-"
        rollout = str((meta.get("labels") or {}).get(ROLLOUT_LABEL) or "-")
        row = [str(meta.get("name", "")), f"{_icon(phase)} {phase}", age, rollout]
        rows.append(([str(meta.get("namespace") or "default")] if all_namespaces else []) + row)
    widths = [max(len(row[c]) for row in rows) + 2 for c in range(len(header))]
    return "\n".join("".join(f"{v:<{w}}" for v, w in zip(row, widths, strict=True)).rstrip() for row in rows)


@click.command("analysisruns")
@click.option("-A", "--all-namespaces", is_flag=True, help="Runs of every namespace.")
@_namespace_option
@click.pass_context
def list_analysisruns(ctx: click.Context, all_namespaces: bool, namespace: str | None) -> None:
    """List AnalysisRuns: NAME STATUS AGE ROLLOUT."""
    with _store(ctx) as store:
        runs = store.list("AnalysisRun", None if all_namespaces else _namespace(ctx, namespace))
    if not runs:
        click.echo("No analysisruns found.")
        return
    runs.sort(
        key=lambda r: (
            r["metadata"].get("namespace", ""),
            r["metadata"].get("creationTimestamp", ""),
            r["metadata"]["name"],
        )
    )
    click.echo(render_analysis_run_list(runs, all_namespaces=all_namespaces))


# -- terminate ---------------------------------------------------------------------------------------


@click.group()
def terminate() -> None:
    """Stop an analysis run early (spec.terminate)."""


@terminate.command("analysisrun")
@click.argument("name")
@_namespace_option
@click.pass_context
def terminate_analysisrun(ctx: click.Context, name: str, namespace: str | None) -> None:
    """Terminate an AnalysisRun: in-flight measurements end and no new ones are taken."""
    ns = _namespace(ctx, namespace)
    with _store(ctx) as store:
        _get_run(store, name, ns)

        def set_terminate(obj: Obj) -> None:
            obj.setdefault("spec", {})["terminate"] = True

        stored = store.mutate("AnalysisRun", name, ns, set_terminate)
    phase = (stored.get("status") or {}).get("phase")
    note = f" (it had already completed: {phase})" if phase in COMPLETED_PHASES else ""
    click.echo(f"analysisrun.argoproj.io/{name} terminated{note}")


# -- registration ------------------------------------------------------------------------------------


def _alias(command: click.Command, name: str) -> click.Command:
    """`command` under another name, left out of `--help` (click has no aliases of its own)."""
    return click.Command(name, callback=command.callback, params=command.params, help=command.help, hidden=True)


# Argo's aliases: `create ar`, `terminate ar|analysisruns`.
create.add_command(_alias(create_analysisrun, "ar"))
terminate.add_command(_alias(terminate_analysisrun, "ar"))
terminate.add_command(_alias(terminate_analysisrun, "analysisruns"))


def register_analysis_commands(cli: click.Group, *, get: click.Group, list_: click.Group) -> None:
    """Add `create`, `terminate`, `get analysisrun|ar` and `list analysisruns|analysisrun|ar` to the CLI."""
    cli.add_command(create)
    cli.add_command(terminate)
    get.add_command(get_analysisrun, "analysisrun")
    get.add_command(_alias(get_analysisrun, "ar"))
    list_.add_command(list_analysisruns, "analysisruns")
    for alias in ("analysisrun", "ar"):
        list_.add_command(_alias(list_analysisruns, alias))

"""`create|get|list|terminate analysisrun` against a temporary state file (no controller).

The commands are mounted the way `rollouts.cli.main` mounts them
(`register_analysis_commands`) on a root group that reuses main's own global options
(`--state`, `-n`), so each test runs `rollouts --state FILE …` as a user would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from rollouts.cli.analysis_cmds import register_analysis_commands, render_analysis_run
from rollouts.cli.main import cli as main_cli
from rollouts.store.sqlite import SqliteStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "analysis"


def rollouts_command() -> click.Group:
    """A `rollouts` root with main's global options and only the analysis commands."""
    root = click.Group("rollouts", callback=main_cli.callback, params=list(main_cli.params))
    get, list_ = click.Group("get"), click.Group("list")
    root.add_command(get)
    root.add_command(list_, "list")
    register_analysis_commands(root, get=get, list_=list_)
    return root


ROLLOUTS = rollouts_command()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(state: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(state)
    try:
        yield opened
    finally:
        opened.close()


def run(state: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(ROLLOUTS, ["--state", str(state), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def ok(state: Path, *args: str) -> str:
    code, output = run(state, *args)
    assert code == 0, output
    return output


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    return loaded


def template(name: str, *, args: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "args": args or [],
            "metrics": [
                {
                    "name": f"{name}-metric",
                    "successCondition": "result[0] > 0.9",
                    "provider": {"prometheus": {"address": "http://prom:9090", "query": "up"}},
                }
            ],
            **spec,
        },
    }


def runs(store: SqliteStore, namespace: str | None = None) -> list[dict[str, Any]]:
    return store.list("AnalysisRun", namespace)


# -- create --------------------------------------------------------------------------------------------


def test_create_from_template_generates_a_name(state: Path, store: SqliteStore) -> None:
    store.create(example("success-rate-analysis"))
    output = ok(state, "create", "analysisrun", "--from", "success-rate-analysis", "-a", "service-name=checkout")
    [stored] = runs(store)
    name = stored["metadata"]["name"]
    assert output == f"analysisrun.argoproj.io/{name} created\n"
    assert name.startswith("success-rate-analysis-") and len(name) == len("success-rate-analysis-") + 5
    assert stored["metadata"]["namespace"] == "default"
    assert "status" not in stored  # the controller starts it
    args = {a["name"]: a.get("value") for a in stored["spec"]["args"]}
    assert args == {
        "service-name": "checkout",
        "revision": ".*",
        "error-threshold": "1",
        "prometheus-address": "http://127.0.0.1:9090",
    }
    assert stored["spec"]["metrics"] == example("success-rate-analysis")["spec"]["metrics"]


def test_create_with_name_namespace_and_overridden_default(state: Path, store: SqliteStore) -> None:
    body = example("latency-analysis")
    body["metadata"]["namespace"] = "shop"
    store.create(body)
    ok(
        state,
        "-n",
        "shop",
        "create",
        "ar",
        "--from",
        "latency-analysis",
        "--name",
        "latency-check-1",
        "-a",
        "service-name=checkout",
        "-a",
        "latency-threshold-ms=250",
        "--instance-id",
        "blue",
    )
    stored = store.must_get("AnalysisRun", "latency-check-1", "shop")
    args = {a["name"]: a.get("value") for a in stored["spec"]["args"]}
    assert args["latency-threshold-ms"] == "250"
    assert stored["metadata"]["labels"] == {"argo-rollouts.argoproj.io/controller-instance-id": "blue"}


def test_create_local_namespace_option(state: Path, store: SqliteStore) -> None:
    body = template("smoke")
    body["metadata"]["namespace"] = "qa"
    store.create(body)
    ok(state, "create", "analysisrun", "--from", "smoke", "--generate-name", "smoke-run-", "-n", "qa")
    [stored] = runs(store, "qa")
    assert stored["metadata"]["name"].startswith("smoke-run-")


def test_create_from_cluster_template(state: Path, store: SqliteStore) -> None:
    body = template("global-smoke")
    body["kind"] = "ClusterAnalysisTemplate"
    store.create(body)
    ok(state, "create", "analysisrun", "--global", "--from", "global-smoke", "--name", "g1")
    assert store.must_get("AnalysisRun", "g1")["spec"]["metrics"][0]["name"] == "global-smoke-metric"


def test_create_follows_nested_templates(state: Path, store: SqliteStore) -> None:
    store.create(template("inner", args=[{"name": "service-name"}]))
    store.create(template("outer", templates=[{"templateName": "inner"}]))
    ok(state, "create", "analysisrun", "--from", "outer", "--name", "nested", "-a", "service-name=api")
    stored = store.must_get("AnalysisRun", "nested")
    assert [m["name"] for m in stored["spec"]["metrics"]] == ["outer-metric", "inner-metric"]
    assert stored["spec"]["args"] == [{"name": "service-name", "value": "api"}]


def test_create_from_file(state: Path, store: SqliteStore) -> None:
    path = EXAMPLES / "q2q-ai-quality-analysis.yaml"
    output = ok(state, "create", "analysisrun", "--from-file", str(path), "-a", "service-name=q2q", "--name", "q1")
    assert output == "analysisrun.argoproj.io/q1 created\n"
    assert store.must_get("AnalysisRun", "q1")["spec"]["metrics"][0]["name"] == "quality-score"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("--from", "nope"),
            'error: AnalysisTemplate "nope" not found in namespace "default": create it with `rollouts apply -f`'
            " (or add --global for a ClusterAnalysisTemplate)",
            id="unknown-template",
        ),
        pytest.param(
            ("--global", "--from", "success-rate-analysis"),
            'error: ClusterAnalysisTemplate "success-rate-analysis" not found',
            id="unknown-cluster-template",
        ),
        pytest.param(
            ("--from", "success-rate-analysis", "-a", "service-name"),
            "error: -a/--argument expects NAME=VALUE, got 'service-name' (e.g. -a service-name=checkout)",
            id="bad-argument-syntax",
        ),
        pytest.param(
            ("--from", "success-rate-analysis", "-a", "=checkout"),
            "error: -a/--argument expects NAME=VALUE, got '=checkout'",
            id="argument-without-name",
        ),
        pytest.param(
            ("--from", "success-rate-analysis"),
            "error: argument 'service-name' is required by AnalysisTemplate \"success-rate-analysis\": "
            "pass -a service-name=VALUE",
            id="missing-required-arg",
        ),
        pytest.param(
            ("--from", "success-rate-analysis", "-a", "service-name=x", "-a", "servce=y"),
            "error: argument 'servce' is not declared by the template (it declares: error-threshold, "
            "prometheus-address, revision, service-name)",
            id="undeclared-arg",
        ),
        pytest.param(
            ("--from", "success-rate-analysis", "-a", "service-name=x", "--name", "a", "--generate-name", "b-"),
            "error: --name and --generate-name cannot be used together",
            id="name-and-generate-name",
        ),
        pytest.param(
            ("--from", "success-rate-analysis", "-a", "service-name=x", "--name", "Bad_Name"),
            "error: --name 'Bad_Name' is not a valid name",
            id="invalid-name",
        ),
        pytest.param((), "error: give exactly one of --from TEMPLATE and --from-file FILE", id="no-source"),
        pytest.param(
            ("--from", "success-rate-analysis", "--from-file", "x.yaml"),
            "error: give exactly one of --from TEMPLATE and --from-file FILE",
            id="two-sources",
        ),
        pytest.param(("--from-file", "/no/such/template.yaml"), "cannot read file", id="unreadable-file"),
    ],
)
def test_create_errors_are_one_line(state: Path, store: SqliteStore, args: tuple[str, ...], message: str) -> None:
    store.create(example("success-rate-analysis"))
    code, output = run(state, "create", "analysisrun", *args)
    assert code == 1
    assert output.startswith("error: ") and output.count("\n") == 1, output
    assert message in output
    assert runs(store) == []


def test_create_existing_name_is_an_error(state: Path, store: SqliteStore) -> None:
    store.create(template("smoke"))
    ok(state, "create", "analysisrun", "--from", "smoke", "--name", "once")
    code, output = run(state, "create", "analysisrun", "--from", "smoke", "--name", "once")
    assert (code, output) == (
        1,
        'error: analysisrun "once" already exists in namespace "default": choose another --name\n',
    )


def test_create_invalid_nested_ref_is_an_error(state: Path, store: SqliteStore) -> None:
    store.create(template("outer", templates=[{"templateName": "missing"}]))
    code, output = run(state, "create", "analysisrun", "--from", "outer")
    assert code == 1
    assert output.startswith('error: AnalysisTemplate "missing" not found (referenced by AnalysisTemplate "outer"')


# -- get -----------------------------------------------------------------------------------------------


def failed_run(**labels: str) -> dict[str, Any]:
    """A run as the controller leaves it after two failed measurements (status written directly)."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {"name": "checkout-7d9f-3-2", "namespace": "default", "labels": labels or None},
        "spec": {
            "args": [
                {"name": "service-name", "value": "checkout"},
                {"name": "token", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
            ],
            "metrics": [
                {
                    "name": "error-rate",
                    "interval": "30s",
                    "count": 5,
                    "failureLimit": 1,
                    "successCondition": "result[0] < 0.01",
                    "provider": {"prometheus": {"address": "http://prom:9090", "query": "{{args.service-name}}"}},
                },
                {
                    "name": "smoke",
                    "provider": {
                        "job": {"spec": {"template": {"spec": {"containers": [{"name": "c", "command": ["./smoke"]}]}}}}
                    },
                },
            ],
        },
        "status": {
            "phase": "Failed",
            "message": 'Metric "error-rate" assessed Failed due to failed (2) > failureLimit (1)',
            "startedAt": "2026-11-26T05:00:00Z",
            "completedAt": "2026-11-26T05:00:30Z",
            "runSummary": {"count": 2, "failed": 1, "successful": 1},
            "metricResults": [
                {
                    "name": "error-rate",
                    "phase": "Failed",
                    "count": 2,
                    "failed": 2,
                    "metadata": {"ResolvedPrometheusQuery": 'sum(rate(x{service="checkout"}[1m]))'},
                    "measurements": [
                        {
                            "phase": "Failed",
                            "startedAt": "2026-11-26T05:00:00Z",
                            "finishedAt": "2026-11-26T05:00:00Z",
                            "value": "[0.047]",
                        },
                        {
                            "phase": "Failed",
                            "startedAt": "2026-11-26T05:00:30Z",
                            "finishedAt": "2026-11-26T05:00:30Z",
                            "value": "[0.051]",
                        },
                    ],
                },
                {
                    "name": "smoke",
                    "phase": "Successful",
                    "count": 1,
                    "successful": 1,
                    "consecutiveSuccess": 1,
                    "metadata": {"job-name": "analysis-job-1a2b3c"},
                    "measurements": [
                        {
                            "phase": "Successful",
                            "startedAt": "2026-11-26T05:00:00Z",
                            "finishedAt": "2026-11-26T05:00:02Z",
                            "value": "0",
                            "message": "job analysis-job-1a2b3c completed: exit 0; output:\nchecked 12 pages\nall good",
                        }
                    ],
                },
            ],
        },
    }


def test_get_shows_verdict_metrics_and_measurements(state: Path, store: SqliteStore) -> None:
    store.create(failed_run(rollout="checkout", **{"rollout-type": "Step", "step-index": "3"}))
    output = ok(state, "get", "analysisrun", "checkout-7d9f-3-2")
    lines = output.splitlines()
    assert lines[0] == "Name:            checkout-7d9f-3-2"
    assert "Status:          ✖ Failed" in lines
    assert 'Message:         Metric "error-rate" assessed Failed due to failed (2) > failureLimit (1)' in lines
    assert "Rollout:         checkout (Step, step 3)" in lines
    assert any(line.startswith("Started:         2026-11-26T05:00:00Z (") for line in lines)
    assert "Run Summary:     count 2, successful 1, failed 1, inconclusive 0, error 0" in lines
    assert "  service-name:  checkout" in lines
    assert "  token:         <secret api, key token>" in lines
    assert "  ✖ error-rate" in lines
    assert '    Query:         sum(rate(x{service="checkout"}[1m]))' in lines  # the resolved query
    assert "    Conditions:    success: result[0] < 0.01" in lines
    assert (
        "    Limits:        interval 30s, count 5, failureLimit 1, inconclusiveLimit 0, consecutiveErrorLimit 4"
        in lines
    )
    assert (
        "    Counters:      count 2, successful 0, failed 2, inconclusive 0, error 0, consecutiveError 0,"
        " consecutiveSuccess 0" in lines
    )
    table = lines[lines.index("  ✖ error-rate") :]
    header = table.index("    Measurements:") + 1
    assert table[header].split() == ["TIME", "PHASE", "VALUE", "MESSAGE"]
    assert table[header + 1].split() == ["2026-11-26T05:00:00Z", "✖", "Failed", "[0.047]"]
    assert table[header + 2].split() == ["2026-11-26T05:00:30Z", "✖", "Failed", "[0.051]"]
    # The job metric: its command, metadata, and a multi-line message aligned under MESSAGE.
    assert "  ✔ smoke" in lines
    assert "    Command:       ./smoke" in lines
    assert "    Metadata:      job-name=analysis-job-1a2b3c" in lines
    row = next(line for line in lines if line.endswith("job analysis-job-1a2b3c completed: exit 0; output:"))
    column = row.index("job analysis-job")
    following = lines[lines.index(row) + 1 : lines.index(row) + 3]
    assert [line[column:] for line in following] == ["checked 12 pages", "all good"]
    assert all(not line[:column].strip() for line in following)


def test_get_pending_run(state: Path, store: SqliteStore) -> None:
    body = failed_run()
    del body["status"]
    store.create(body)
    output = ok(state, "get", "ar", "checkout-7d9f-3-2")
    assert "Status:          ◌ Pending" in output
    assert "    Query:         checkout\n" in output  # {{args.service-name}} substituted for display
    assert output.count("No measurements yet.") == 2


def test_get_watch_stops_when_the_run_completed(state: Path, store: SqliteStore) -> None:
    store.create(failed_run())
    output = ok(state, "get", "analysisrun", "checkout-7d9f-3-2", "--watch")
    assert output.count("Name:            checkout-7d9f-3-2") == 1


def test_get_watch_stops_at_the_timeout(state: Path, store: SqliteStore) -> None:
    body = failed_run()
    body["status"] = {"phase": "Running", "startedAt": "2026-11-26T05:00:00Z"}
    store.create(body)
    output = ok(state, "get", "analysisrun", "checkout-7d9f-3-2", "--watch", "--timeout-seconds", "0.3")
    assert "Status:          ◌ Running" in output


def test_get_missing_run(state: Path) -> None:
    code, output = run(state, "get", "analysisrun", "nope")
    assert (code, output) == (
        1,
        'error: analysisrun "nope" not found in namespace "default" (see `rollouts list analysisruns`)\n',
    )


def test_render_is_pure() -> None:
    text = render_analysis_run(failed_run())
    assert text.startswith("Name:            checkout-7d9f-3-2\nNamespace:       default\nStatus:          ✖ Failed")


# -- list ----------------------------------------------------------------------------------------------


def test_list(state: Path, store: SqliteStore) -> None:
    store.create(failed_run(rollout="checkout"))
    manual = failed_run()
    manual["metadata"] = {"name": "by-hand", "namespace": "default"}
    del manual["status"]
    store.create(manual)
    other = failed_run()
    other["metadata"] = {"name": "elsewhere", "namespace": "qa"}
    store.create(other)

    lines = ok(state, "list", "analysisruns").splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AGE", "ROLLOUT"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"checkout-7d9f-3-2", "by-hand"}
    assert rows["checkout-7d9f-3-2"][1:3] == ["✖", "Failed"] and rows["checkout-7d9f-3-2"][-1] == "checkout"
    assert rows["by-hand"][1:3] == ["◌", "Pending"] and rows["by-hand"][-1] == "-"
    assert rows["by-hand"][3].endswith("s")  # an age such as 0s

    everywhere = ok(state, "list", "ar", "-A").splitlines()
    assert everywhere[0].split() == ["NAMESPACE", "NAME", "STATUS", "AGE", "ROLLOUT"]
    assert {line.split()[1] for line in everywhere[1:]} == {"checkout-7d9f-3-2", "by-hand", "elsewhere"}


def test_list_empty(state: Path) -> None:
    assert ok(state, "list", "analysisruns") == "No analysisruns found.\n"


# -- terminate -----------------------------------------------------------------------------------------


def test_terminate_sets_spec_terminate(state: Path, store: SqliteStore) -> None:
    body = failed_run()
    body["status"] = {"phase": "Running"}
    store.create(body)
    assert ok(state, "terminate", "analysisrun", "checkout-7d9f-3-2") == (
        "analysisrun.argoproj.io/checkout-7d9f-3-2 terminated\n"
    )
    stored = store.must_get("AnalysisRun", "checkout-7d9f-3-2")
    assert stored["spec"]["terminate"] is True
    assert stored["status"] == {"phase": "Running"}  # the controller writes the outcome


def test_terminate_completed_run_says_so(state: Path, store: SqliteStore) -> None:
    store.create(failed_run())
    output = ok(state, "terminate", "ar", "checkout-7d9f-3-2")
    assert output == "analysisrun.argoproj.io/checkout-7d9f-3-2 terminated (it had already completed: Failed)\n"


def test_terminate_missing_run(state: Path) -> None:
    code, output = run(state, "terminate", "analysisrun", "nope")
    assert code == 1
    assert output == 'error: analysisrun "nope" not found in namespace "default" (see `rollouts list analysisruns`)\n'

"""Bad input to the CLI: one line `error: …`, exit 1, never a traceback, nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rollouts.cli.main import cli
from rollouts.store.sqlite import SqliteStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def run(state: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--state", str(state), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("promote", "nope"), 'error: rollout "nope" not found in namespace "default"', id="promote-missing"
        ),
        pytest.param(("abort", "nope"), 'error: rollout "nope" not found', id="abort-missing"),
        pytest.param(("get", "rollout", "nope"), 'error: rollout "nope" not found', id="get-missing"),
        pytest.param(
            ("set", "image", "nope", "no-equals"),
            "error: expected CONTAINER=IMAGE, got 'no-equals'",
            id="set-image-bad-assignment",
        ),
        pytest.param(
            ("status", "x", "--timeout", "soon"), "error: --timeout: invalid duration 'soon'", id="status-bad-timeout"
        ),
        pytest.param(("lint", "-f", "/no/such/file.yaml"), "cannot read file", id="lint-missing-file"),
    ],
)
def test_errors_are_one_line(state: Path, args: tuple[str, ...], message: str) -> None:
    code, output = run(state, *args)
    assert code == 1
    assert message in output
    assert "Traceback" not in output


def test_lint_good_examples(state: Path) -> None:
    code, output = run(state, "lint", "-f", str(EXAMPLES / "q2q-ai"), "-f", str(EXAMPLES / "api-gateway"))
    assert code == 0, output
    assert output.strip().splitlines()[-1].endswith("0 errors, 0 warnings")


def test_lint_bad_weight_names_path_and_fix(state: Path, tmp_path: Path) -> None:
    manifest = (EXAMPLES / "q2q-ai" / "rollout.yaml").read_text().replace("setWeight: 50", "setWeight: 140")
    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest)
    code, output = run(state, "lint", "-f", str(bad))
    assert code == 1
    assert "spec.strategy.canary.steps[" in output and "setWeight: 140 is not between 0 and 100" in output


def test_apply_refuses_invalid_manifest_and_stores_nothing(state: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: x}\nspec:\n  strategy: {}\n")
    code, output = run(state, "apply", "-f", str(bad))
    assert code == 1 and "nothing was applied" in output
    store = SqliteStore(state)
    assert store.list("Rollout") == []
    store.close()


def test_apply_then_operations_write_intent(state: Path) -> None:
    code, output = run(state, "apply", "-f", str(EXAMPLES / "q2q-ai"))
    assert code == 0, output
    assert "rollout.argoproj.io/teei-q2q-ai created" in output
    code, output = run(state, "apply", "-f", str(EXAMPLES / "q2q-ai"))
    assert "rollout.argoproj.io/teei-q2q-ai unchanged" in output
    assert run(state, "pause", "teei-q2q-ai")[0] == 0
    assert run(state, "abort", "teei-q2q-ai")[0] == 0
    code, output = run(state, "set", "image", "teei-q2q-ai", "q2q-ai=ghcr.io/henrigkroine/teei-q2q-ai:v1.5.0")
    assert code == 0, output
    store = SqliteStore(state)
    ro = store.must_get("Rollout", "teei-q2q-ai")
    store.close()
    assert ro["spec"]["paused"] is True and ro["status"]["abort"] is True
    assert ro["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.5.0")
    assert ro["metadata"]["generation"] == 3
    code, output = run(state, "list", "rollouts")
    assert code == 0 and output.splitlines()[0].split() == [
        "NAME",
        "STRATEGY",
        "STATUS",
        "STEP",
        "SET-WEIGHT",
        "READY",
        "DESIRED",
        "UP-TO-DATE",
        "AVAILABLE",
    ]


def test_pause_then_resume_toggle_spec_paused(state: Path) -> None:
    code, output = run(state, "apply", "-f", str(EXAMPLES / "q2q-ai"))
    assert code == 0, output
    name = next(o["metadata"]["name"] for o in SqliteStore(state).list("Rollout"))
    assert run(state, "pause", name) == (0, f"rollout '{name}' paused\n")
    assert (SqliteStore(state).get("Rollout", name, "default") or {})["spec"]["paused"] is True
    assert run(state, "resume", name) == (0, f"rollout '{name}' resumed\n")
    assert (SqliteStore(state).get("Rollout", name, "default") or {})["spec"]["paused"] is False
    code, output = run(state, "resume", name)
    assert code == 1 and output.startswith(f'error: rollout "{name}" is not paused by a user')

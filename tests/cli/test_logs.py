"""`rollouts logs POD [--previous] [--tail N]`: a pod's current and previous log on the embedded platform."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rollouts.cli.main import cli
from rollouts.store.sqlite import SqliteStore


@pytest.fixture
def state(tmp_path: Path) -> Path:
    logs = tmp_path / "logs" / "web-abc-1"
    logs.mkdir(parents=True)
    (logs / "app.log").write_text("started\nserving\n")
    (logs / "app.previous.log").write_text("crashed: exit 1\n")
    store = SqliteStore(tmp_path / "state.db")
    store.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web-abc-1"},
            "status": {"logPaths": {"app": str(logs / "app.log")}},
        }
    )
    store.close()
    return tmp_path / "state.db"


@pytest.mark.parametrize(
    ("args", "expected_code", "expected"),
    [
        pytest.param(("web-abc-1",), 0, "started\nserving\n", id="current"),
        pytest.param(("web-abc-1", "--previous"), 0, "crashed: exit 1\n", id="previous"),
        pytest.param(("web-abc-1", "--tail", "1"), 0, "serving\n", id="tail"),
        pytest.param(
            ("web-abc-1", "-c", "sidecar"), 1, 'has no container "sidecar" (containers: app)', id="no-container"
        ),
        pytest.param(("nope",), 1, 'error: pod "nope" not found', id="no-pod"),
    ],
)
def test_logs(state: Path, args: tuple[str, ...], expected_code: int, expected: str) -> None:
    result = CliRunner().invoke(cli, ["--state", str(state), "logs", *args])
    assert result.exit_code == expected_code
    assert expected in result.output

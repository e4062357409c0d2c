"""The Dockerfile, checked statically (no container engine here) and against the Deployment.

- the base: one Python 3.11 slim image, pinned to a Debian release, for both stages (the wheels
  built in the first stage are installed in the second);
- the package is built from this repository's pyproject.toml and src/ and installed offline
  from those wheels, with no other package index anywhere;
- the image runs `rollouts controller --platform kubernetes` as the Deployment's non-root user,
  exposes the Deployment's ports, and works on its read-only root filesystem (no bytecode
  writes; the working and home directory is the Deployment's writable emptyDir);
- .dockerignore sends exactly what the Dockerfile copies; nothing is fetched with ADD.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

from tests.deploy.test_install_manifests import _container, _pod

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
BASE = re.compile(r"^python:3\.11(\.\d+)?-slim-(bookworm|trixie)$")
INDEX_OPTIONS = ("--index-url", "--extra-index-url", "-i", "--trusted-host")


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends in a line continuation"
    instructions = []
    for line in logical:
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, args in _dockerfile():
        if word == "FROM":
            stages.append([])
        assert stages, f"{word} before the first FROM"
        stages[-1].append((word, args))
    return stages


def _final_stage() -> list[tuple[str, str]]:
    return _stages()[-1]


def _run_words(stage: list[tuple[str, str]]) -> list[list[str]]:
    """Each shell command of each RUN, split into words."""
    commands = []
    for word, args in stage:
        if word == "RUN":
            commands += [shlex.split(part) for part in re.split(r"&&|;", args) if part.strip()]
    return commands


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _exec_form(stage: list[tuple[str, str]], word: str) -> list[str]:
    (args,) = [a for w, a in stage if w == word][-1:]
    value = json.loads(args)
    assert isinstance(value, list), f"{word} must be in exec form (a JSON list): {args}"
    return [str(v) for v in value]


def test_both_stages_use_one_pinned_python_311_slim_base() -> None:
    stages = _stages()
    assert len(stages) == 2, "a build stage and a runtime stage"
    images = [stage[0][1].split()[0] for stage in stages]
    assert all(BASE.match(image) for image in images), images
    assert len(set(images)) == 1, f"wheels built on one base must be installed on the same base: {images}"
    assert stages[0][0][1].split()[1:] == ["AS", "build"]


def test_the_package_is_built_from_pyproject_and_installed_offline() -> None:
    build, final = _stages()
    copied = [args.split() for word, args in build if word == "COPY"]
    sources = {source for args in copied for source in args[:-1]}
    # What building the project needs: its metadata (and the readme it names) and the sources.
    assert {"pyproject.toml", PYPROJECT["project"]["readme"], "src"} <= sources
    (wheel,) = [c for c in _run_words(build) if c[:2] == ["pip", "wheel"]]
    assert wheel[-1] == ".", "the wheels are built from the build context's pyproject.toml"
    (install,) = [c for c in _run_words(final) if c[:2] == ["pip", "install"]]
    assert "--no-index" in install and "--find-links" in install
    assert install[-1] == PYPROJECT["project"]["name"]
    assert [a for w, a in final if w == "COPY"] == ["--from=build /wheels /wheels"], "only the wheels come over"


def test_no_other_package_index_and_nothing_fetched() -> None:
    for word, args in _dockerfile():
        for option in INDEX_OPTIONS:
            assert not re.search(rf"(^|\s){re.escape(option)}(=|\s)", args), f"{word} {args}"
        assert not re.search(r"PIP_(EXTRA_)?INDEX_URL", args), f"{word} {args}"
        if word == "ADD":
            raise AssertionError(f"ADD {args}: use COPY (ADD fetches URLs and unpacks archives)")
        if word == "RUN":
            assert not re.search(r"\b(curl|wget)\b", args), f"RUN {args}"


def test_runs_the_controller_as_the_deployment_runs_it() -> None:
    final = _final_stage()
    entrypoint, cmd = _exec_form(final, "ENTRYPOINT"), _exec_form(final, "CMD")
    assert [*entrypoint, *cmd] == ["rollouts", "controller", "--platform", "kubernetes"]
    assert entrypoint[0] in PYPROJECT["project"]["scripts"], "the console script the package installs"
    container = _container()
    assert container["command"] == entrypoint
    assert container["args"][: len(cmd)] == cmd, "the Deployment adds options, it does not change the command"


def test_runs_as_the_deployments_non_root_user() -> None:
    users = [args for word, args in _final_stage() if word == "USER"]
    assert users, "the final stage sets no USER: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and group.isdigit(), "a numeric USER lets Kubernetes verify runAsNonRoot"
    assert int(user) != 0
    security = _container()["securityContext"]
    assert (int(user), int(group)) == (security["runAsUser"], security["runAsGroup"])
    useradd = next(c for c in _run_words(_final_stage()) if c[0] == "useradd")
    assert useradd[useradd.index("--uid") + 1] == user


def test_exposes_the_deployments_ports() -> None:
    exposed = {int(port) for args in (a for w, a in _final_stage() if w == "EXPOSE") for port in args.split()}
    assert exposed == {p["containerPort"] for p in _container()["ports"]}


def test_works_on_the_read_only_root_filesystem() -> None:
    final = _final_stage()
    assert _container()["securityContext"]["readOnlyRootFilesystem"] is True
    assert _env(final).get("PYTHONDONTWRITEBYTECODE") == "1", "Python must not try to write .pyc files"
    writable = {
        m["mountPath"]
        for m in _container()["volumeMounts"]
        if "emptyDir" in {v["name"]: v for v in _pod()["volumes"]}[m["name"]]
    }
    workdir = [args for word, args in final if word == "WORKDIR"][-1]
    assert workdir in writable, f"the working directory {workdir} must be writable"
    home = {e["name"]: e.get("value") for e in _container()["env"]}.get("HOME")
    assert home in writable, f"HOME={home} must be writable"
    useradd = next(c for c in _run_words(final) if c[0] == "useradd")
    assert useradd[useradd.index("--home-dir") + 1] in writable


def test_dockerignore_sends_exactly_what_is_copied() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow list: everything else (.venv, .git, tests) stays out"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for stage in _stages()
        for word, args in stage
        if word == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert allowed == copied

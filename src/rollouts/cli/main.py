"""The `rollouts` command, shaped like `kubectl argo rollouts`.

Commands write intent (patches from `rollouts.ops.patches`) or read the store; the
controller does the rest. Every failure is one line `error: …` and exit code 1 — bad input
never shows a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click

from rollouts import __version__
from rollouts.cli.analysis_cmds import register_analysis_commands
from rollouts.cli.info import build_info, rollout_status
from rollouts.cli.render import render_list, render_rollout
from rollouts.config import default_state_path
from rollouts.core.durations import DurationError, parse_go_duration
from rollouts.ops import patches
from rollouts.ops.apply import KeptChanging, apply_operation
from rollouts.store.sqlite import SqliteStore, StoreError

Obj = dict[str, Any]


class CliError(click.ClickException):
    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def fail(message: str) -> NoReturn:
    raise CliError(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite state file of the embedded platform (default: $ROLLOUTS_STATE or the user state directory).",
)
@click.option("-n", "--namespace", default="default", show_default=True, help="Namespace of the objects.")
@click.option(
    "--platform",
    type=click.Choice(["embedded", "kubernetes"]),
    default="embedded",
    show_default=True,
    help="Where the objects live: the state file (embedded) or a Kubernetes API server.",
)
@click.option(
    "--kubeconfig", default=None, help="[kubernetes] kubeconfig file (default: in-cluster, then ~/.kube/config)."
)
@click.option("--context", "kube_context", default=None, help="[kubernetes] kubeconfig context.")
@click.pass_context
def cli(
    ctx: click.Context,
    state: Path | None,
    namespace: str,
    platform: str,
    kubeconfig: str | None,
    kube_context: str | None,
) -> None:
    """Progressive delivery: canary and blue/green rollouts with automated analysis."""
    ctx.obj = {
        "state": state or default_state_path(),
        "namespace": namespace,
        "platform": platform,
        "kubeconfig": kubeconfig,
        "context": kube_context,
    }


def _open_kube_store(ctx: click.Context) -> Any:
    """The Kubernetes store facade (same calls as SqliteStore); exits with one line if it cannot load."""
    from rollouts.cli.kube_store import KubeCliStore

    try:
        return KubeCliStore(ctx.obj.get("kubeconfig"), ctx.obj.get("context"), ctx.obj["namespace"])
    except Exception as exc:  # ConfigException, a missing or malformed file, …
        fail(f"cannot load the Kubernetes configuration: {exc} (check --kubeconfig/--context)")


@contextmanager
def open_store(ctx: click.Context) -> Iterator[SqliteStore]:
    """The store of --platform: SqliteStore, or `KubeCliStore`, which offers the SqliteStore calls the CLI uses."""
    path: Path = ctx.obj["state"]
    try:
        if ctx.obj.get("platform") == "kubernetes":
            store: SqliteStore = _open_kube_store(ctx)
        else:
            store = SqliteStore(path)
    except click.ClickException:
        raise
    except Exception as exc:
        fail(f"cannot open state file {path}: {exc} (choose another with --state)")
    try:
        yield store
    except StoreError as exc:
        fail(str(exc))
    finally:
        store.close()


def _get_rollout(store: SqliteStore, name: str, namespace: str) -> Obj:
    obj = store.get("Rollout", name, namespace)
    if obj is None:
        fail(f'rollout "{name}" not found in namespace "{namespace}" (see `rollouts list rollouts`)')
    return obj


def _write_intent(ctx: click.Context, name: str, operation: Callable[[Obj], patches.Patch]) -> None:
    """Open the store and write one operation's patch to the rollout `name`."""
    with open_store(ctx) as store:
        _apply_patch(store, name, ctx.obj["namespace"], operation)


def _apply_patch(
    store: SqliteStore, name: str, namespace: str, operation: Callable[[Obj], patches.Patch]
) -> patches.Patch:
    """Read, patch and write with the version read; retried when the controller wrote in between."""
    try:
        return apply_operation(store, name, namespace, operation, attempts=10)
    except (patches.OperationError, KeptChanging) as exc:
        fail(str(exc))


# --- lint / apply ------------------------------------------------------------------------------


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, help="Manifest file, directory or - (stdin).")
@click.pass_context
def lint(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Validate manifests as Argo Rollouts would; exit 1 on errors."""
    from rollouts.model.lint import lint_documents
    from rollouts.model.manifests import load_files

    docs, load_findings = load_files(list(files))
    report = lint_documents(docs, load_findings, known_from_store=_known_from_store(ctx))
    for finding in report.findings:
        click.echo(str(finding))
    click.echo(report.summary())
    if report.errors:
        sys.exit(1)


def _known_from_store(ctx: click.Context) -> Any:
    from rollouts.model.validation import KnownObjects

    path: Path = ctx.obj["state"]
    on_kubernetes = ctx.obj.get("platform") == "kubernetes"
    if not on_kubernetes and not path.exists():
        return None
    try:
        store = _open_kube_store(ctx) if on_kubernetes else SqliteStore(path)
    except click.ClickException:
        raise
    except Exception:
        return None
    try:
        namespace = ctx.obj["namespace"]
        return KnownObjects(
            services={o["metadata"]["name"] for o in store.list("Service", namespace)},
            templates={o["metadata"]["name"] for o in store.list("AnalysisTemplate", namespace)},
            cluster_templates={o["metadata"]["name"] for o in store.list("ClusterAnalysisTemplate")},
        )
    except StoreError as exc:
        fail(str(exc))
    finally:
        store.close()


@cli.command()
@click.option("-f", "--filename", "files", multiple=True, required=True, help="Manifest file, directory or - (stdin).")
@click.pass_context
def apply(ctx: click.Context, files: tuple[str, ...]) -> None:
    """Create or update objects from manifests (refused, with nothing written, if any has errors)."""
    from rollouts.model.lint import lint_documents
    from rollouts.model.manifests import load_files

    docs, load_findings = load_files(list(files))
    report = lint_documents(docs, load_findings, known_from_store=_known_from_store(ctx))
    errors = [f for f in report.findings if f.severity == "error"]
    if errors:
        for finding in errors:
            click.echo(str(finding), err=True)
        fail(f"{len(errors)} error(s) in the manifests: nothing was applied")
    with open_store(ctx) as store:
        for doc in docs:
            if doc.resource is None:
                continue
            body = doc.resource.to_json()
            body.pop("status", None) if body.get("kind") != "AnalysisRun" else None
            meta = body.setdefault("metadata", {})
            if body.get("kind") != "ClusterAnalysisTemplate":
                meta.setdefault("namespace", ctx.obj["namespace"])
            _, outcome = store.apply(body)
            click.echo(f"{_resource_name(body)} {outcome}")


def _resource_name(body: Obj) -> str:
    kind = str(body.get("kind", "")).lower()
    group = "argoproj.io" if str(body.get("apiVersion", "")).startswith("argoproj.io") else ""
    return f"{kind}.{group}/{body['metadata']['name']}" if group else f"{kind}/{body['metadata']['name']}"


@cli.command()
@click.argument(
    "kind",
    type=click.Choice(["rollout", "rollouts", "ro", "service", "svc", "analysistemplate", "at", "analysisrun", "ar"]),
)
@click.argument("name")
@click.pass_context
def delete(ctx: click.Context, kind: str, name: str) -> None:
    """Delete an object (a rollout's ReplicaSets, pods and runs go with it)."""
    kinds = {
        "rollout": "Rollout",
        "rollouts": "Rollout",
        "ro": "Rollout",
        "service": "Service",
        "svc": "Service",
        "analysistemplate": "AnalysisTemplate",
        "at": "AnalysisTemplate",
        "analysisrun": "AnalysisRun",
        "ar": "AnalysisRun",
    }
    with open_store(ctx) as store:
        if not store.delete(kinds[kind], name, ctx.obj["namespace"]):
            fail(f'{kinds[kind]} "{name}" not found')
        click.echo(f'{kinds[kind].lower()} "{name}" deleted')


# --- get / list / status ---------------------------------------------------------------------


def _replica_sets_of(store: SqliteStore, namespace: str, rollout: str) -> list[Obj]:
    """The ReplicaSets the rollout owns (by owner reference, as on a cluster)."""
    return store.list("ReplicaSet", namespace, owner=("Rollout", rollout))


def _info(store: SqliteStore, ro: Obj) -> Any:
    namespace = ro["metadata"].get("namespace", "default")
    name = ro["metadata"]["name"]
    rsets = _replica_sets_of(store, namespace, name)
    pods = store.list("Pod", namespace)
    runs = store.list("AnalysisRun", namespace, {"rollout": name})
    return build_info(ro, rsets, pods, runs)


@cli.group()
def get() -> None:
    """Show one object in detail."""


@get.command("rollout")
@click.argument("name")
@click.option("-w", "--watch", is_flag=True, help="Redraw on every change until interrupted.")
@click.option("--timeout-seconds", type=float, default=0, help="With --watch: stop after this long (0 = never).")
@click.pass_context
def get_rollout(ctx: click.Context, name: str, watch: bool, timeout_seconds: float) -> None:
    namespace = ctx.obj["namespace"]
    with open_store(ctx) as store:
        deadline = time.monotonic() + timeout_seconds if timeout_seconds else None
        last = None
        while True:
            ro = _get_rollout(store, name, namespace)
            text = render_rollout(_info(store, ro), store.events("Rollout", name, namespace, limit=8))
            if not watch:
                click.echo(text)
                return
            if text != last:
                click.echo("\x1b[2J\x1b[H" + text if sys.stdout.isatty() else text + "\n")
                last = text
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0.5)


@cli.group("list")
def list_() -> None:
    """List objects."""


@list_.command("rollouts")
@click.option("-A", "--all-namespaces", is_flag=True)
@click.pass_context
def list_rollouts(ctx: click.Context, all_namespaces: bool) -> None:
    with open_store(ctx) as store:
        rollouts = store.list("Rollout", None if all_namespaces else ctx.obj["namespace"])
        if not rollouts:
            click.echo("No rollouts found.")
            return
        click.echo(render_list([_info(store, ro) for ro in rollouts]))


register_analysis_commands(cli, get=get, list_=list_)


@cli.command()
@click.argument("name")
@click.option("-w", "--watch/--no-watch", default=True, help="Wait until the rollout is Healthy or Degraded.")
@click.option("-t", "--timeout", default="0", help="Give up after this long (e.g. 90s, 5m; 0 = never).")
@click.pass_context
def status(ctx: click.Context, name: str, watch: bool, timeout: str) -> None:
    """Print `Status - Message`; with --watch wait for Healthy (exit 0) or Degraded (exit 1)."""
    try:
        limit = parse_go_duration(timeout) if timeout not in ("0", "") else 0.0
    except DurationError as exc:
        fail(f"--timeout: {exc}")
    namespace = ctx.obj["namespace"]
    with open_store(ctx) as store:
        deadline = time.monotonic() + limit if limit else None
        last = None
        while True:
            phase, message = rollout_status(_get_rollout(store, name, namespace))
            line = f"{phase} - {message}" if message else phase
            if line != last:
                click.echo(line)
                last = line
            if phase == "Healthy":
                return
            if phase == "Degraded":
                sys.exit(1)
            if not watch:
                return
            if deadline is not None and time.monotonic() >= deadline:
                fail(f'timed out after {timeout} waiting for rollout "{name}" to become Healthy (now {phase})')
            time.sleep(0.25)


# --- operations ------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.option("--full", is_flag=True, help="Skip all remaining steps, pauses and analysis.")
@click.pass_context
def promote(ctx: click.Context, name: str, full: bool) -> None:
    """Move a paused rollout on (or, with --full, all the way)."""
    _write_intent(ctx, name, lambda ro: patches.promote(ro, full=full))
    click.echo(f"rollout '{name}' {'fully promoted' if full else 'promoted'}")


@cli.command()
@click.argument("name")
@click.pass_context
def abort(ctx: click.Context, name: str) -> None:
    """Send all traffic back to stable and scale the update down."""
    _write_intent(ctx, name, patches.abort)
    click.echo(f"rollout '{name}' aborted")


@cli.group()
def retry() -> None:
    """Retry an aborted rollout or experiment."""


@retry.command("rollout")
@click.argument("name")
@click.pass_context
def retry_rollout(ctx: click.Context, name: str) -> None:
    _write_intent(ctx, name, patches.retry)
    click.echo(f"rollout '{name}' retried")


@cli.command()
@click.argument("name")
@click.option("--to-revision", type=int, default=0, help="Revision to roll back to (0 = the previous one).")
@click.pass_context
def undo(ctx: click.Context, name: str, to_revision: int) -> None:
    """Roll the rollout back to a previous revision's pod template."""
    namespace = ctx.obj["namespace"]
    with open_store(ctx) as store:
        replica_sets = _replica_sets_of(store, namespace, name)
        _apply_patch(store, name, namespace, lambda ro: patches.undo(ro, replica_sets, to_revision))
    click.echo(f"rollout '{name}' undo")


@cli.command()
@click.argument("name")
@click.pass_context
def pause(ctx: click.Context, name: str) -> None:
    """Pause a rollout (spec.paused)."""
    _write_intent(ctx, name, patches.pause)
    click.echo(f"rollout '{name}' paused")


@cli.command()
@click.argument("name")
@click.pass_context
def resume(ctx: click.Context, name: str) -> None:
    """Resume a rollout paused with `pause` (clears spec.paused; pause steps stay)."""
    _write_intent(ctx, name, patches.resume)
    click.echo(f"rollout '{name}' resumed")


@cli.command()
@click.argument("name")
@click.option("-i", "--in", "in_", default="0s", help="Restart after this long (e.g. 10m).")
@click.pass_context
def restart(ctx: click.Context, name: str, in_: str) -> None:
    """Restart the rollout's pods (spec.restartAt)."""
    try:
        delay = parse_go_duration(in_)
    except DurationError as exc:
        fail(f"--in: {exc}")
    at = datetime.now(UTC) + timedelta(seconds=delay)
    _write_intent(ctx, name, lambda ro: patches.restart(ro, at))
    click.echo(f"rollout '{name}' restarts")


@cli.group("set")
def set_() -> None:
    """Change a rollout's spec."""


@set_.command("image")
@click.argument("name")
@click.argument("assignment", metavar="CONTAINER=IMAGE")
@click.pass_context
def set_image(ctx: click.Context, name: str, assignment: str) -> None:
    """Ship a new image: a new revision that the strategy rolls out."""
    container, sep, image = assignment.partition("=")
    if not sep or not container or not image:
        fail(f"expected CONTAINER=IMAGE, got {assignment!r} (e.g. api=ghcr.io/acme/api:v2)")
    _write_intent(ctx, name, lambda ro: patches.set_image(ro, container, image))
    click.echo(f'rollout "{name}" image updated')


@cli.command()
@click.argument("pod")
@click.option("-c", "--container", default=None, help="Container name (default: the pod's only or first container).")
@click.option("-p", "--previous", is_flag=True, help="The log of the previous run (before the last restart).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the container writes, until interrupted.")
@click.option("--tail", "tail_lines", type=int, default=-1, help="Only the last N lines (-1: all).")
@click.pass_context
def logs(ctx: click.Context, pod: str, container: str | None, previous: bool, follow: bool, tail_lines: int) -> None:
    """Print a pod's log: current or previous, optionally following it."""
    if ctx.obj.get("platform") == "kubernetes":
        _kube_logs(ctx, pod, container, previous, follow, None if tail_lines < 0 else tail_lines)
        return
    with open_store(ctx) as store:
        obj = store.get("Pod", pod, ctx.obj["namespace"])
    if obj is None:
        fail(f'pod "{pod}" not found (see the pods in `rollouts get rollout NAME`)')
    paths: dict[str, str] = dict((obj.get("status") or {}).get("logPaths") or {})
    if not paths:
        fail(f'pod "{pod}" has no log yet')
    name = container or next(iter(paths))
    if name not in paths:
        fail(f'pod "{pod}" has no container "{name}" (containers: {", ".join(paths)})')
    path = Path(paths[name])
    if previous:
        path = path.with_name(path.name.removesuffix(".log") + ".previous.log")
        if not path.exists():
            fail(f'container "{name}" of pod "{pod}" has not restarted: there is no previous log')
    try:
        with path.open("rb") as handle:
            data = handle.read()
            lines = data.splitlines(keepends=True)
            sys.stdout.buffer.write(b"".join(lines[-tail_lines:] if tail_lines >= 0 else lines))
            sys.stdout.flush()
            while follow:
                chunk = handle.read()
                if chunk:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                else:
                    time.sleep(0.2)
    except FileNotFoundError:
        fail(f"the log file {path} is gone (the pod was deleted)")


DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


def _kube_logs(
    ctx: click.Context, pod: str, container: str | None, previous: bool, follow: bool, tail_lines: int | None
) -> None:
    """`logs` on a cluster: the pods/log subresource, read (and followed) as `kubectl logs` does."""
    namespace = ctx.obj["namespace"]

    def write(chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()

    store = _open_kube_store(ctx)
    try:
        obj = store.get("Pod", pod, namespace)
        if obj is None:
            fail(f'pod "{pod}" not found in namespace "{namespace}" (check the name and -n/--namespace)')
        if container is None:  # as kubectl: the annotated default, else the first container
            names = [str(c.get("name")) for c in (obj.get("spec") or {}).get("containers") or []]
            wanted = ((obj.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
            container = wanted if wanted in names else (names[0] if names else None)
            if len(names) > 1:
                click.echo(f'Defaulted container "{container}" out of: {", ".join(names)}', err=True)
        store.pod_log(
            pod, namespace, write, container=container, previous=previous, tail_lines=tail_lines, follow=follow
        )
    except StoreError as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C ends a --follow, quietly, as for kubectl
        sys.exit(130)
    finally:
        store.close()


# --- processes -------------------------------------------------------------------------------


@cli.command()
@click.option("--admin-port", default=8090, show_default=True, help="Port of /metrics and /stats on 127.0.0.1.")
@click.option(
    "--prometheus", "prometheus_address", default=None, help="Default Prometheus address for metrics that name none."
)
@click.option("-v", "--verbose", is_flag=True)
@click.option("--identity", default=None, hidden=True, help="Lease holder identity (default: host_pid_random).")
@click.option("--lease-duration", type=float, default=15.0, hidden=True, help="Seconds a lease renewal is good for.")
@click.option("--lease-renew-interval", type=float, default=None, hidden=True, help="Seconds between lease renewals.")
@click.option(
    "--platform",
    type=click.Choice(["embedded", "kubernetes"]),
    default="embedded",
    show_default=True,
    help="embedded: pods are local processes behind the built-in proxy; kubernetes: an operator on a cluster.",
)
@click.option(
    "--kubeconfig", default=None, help="[kubernetes] kubeconfig file (default: in-cluster, then ~/.kube/config)."
)
@click.option("--context", "kube_context", default=None, help="[kubernetes] kubeconfig context.")
@click.option(
    "-n",
    "--namespace",
    "watch_only",
    default=None,
    help="[kubernetes] act only in this namespace (default: all namespaces; or the global -n when given).",
)
@click.option(
    "--watch-namespace", default=None, hidden=True, deprecated="Use --namespace instead.", help="Old --namespace."
)
@click.option(
    "--instance-id",
    default=None,
    help="[kubernetes] act only on objects labelled argo-rollouts.argoproj.io/controller-instance-id=ID "
    "(default: only on objects without that label).",
)
@click.option("--leader-elect/--no-leader-elect", default=True, help="[kubernetes] elect a leader with a Lease.")
@click.option("--metrics-port", default=8090, show_default=True, help="[kubernetes] /metrics port.")
@click.option("--healthz-port", default=8080, show_default=True, help="[kubernetes] /healthz port.")
@click.option("--bind", default="0.0.0.0", show_default=True, help="[kubernetes] address of /metrics and /healthz.")
@click.option(
    "--proxy-process",
    is_flag=True,
    envvar="ROLLOUTS_PROXY_PROCESS",
    help="[embedded] run the proxy in a process of its own, so a busy controller does not delay "
    "proxied requests (also: ROLLOUTS_PROXY_PROCESS=1).",
)
@click.pass_context
def controller(
    ctx: click.Context,
    admin_port: int,
    prometheus_address: str | None,
    verbose: bool,
    identity: str | None,
    lease_duration: float,
    lease_renew_interval: float | None,
    platform: str,
    kubeconfig: str | None,
    kube_context: str | None,
    watch_only: str | None,
    watch_namespace: str | None,
    instance_id: str | None,
    leader_elect: bool,
    metrics_port: int,
    healthz_port: int,
    bind: str,
    proxy_process: bool,
) -> None:
    """Run the controller: on this machine (embedded, the default) or as a Kubernetes operator.

    Controllers started on the same state file (or cluster) elect one leader; the others wait.
    """
    import os
    import signal

    from rollouts.host import EmbeddedHost

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    namespace, instance_id = _controller_scope(ctx, platform, watch_only, watch_namespace, instance_id)
    if platform == "kubernetes":
        _run(
            _kubernetes_controller(
                kubeconfig=kubeconfig or ctx.obj.get("kubeconfig"),
                context=kube_context or ctx.obj.get("context"),
                namespace=namespace,
                instance_id=instance_id,
                leader_elect=leader_elect,
                identity=identity,
                metrics_port=metrics_port,
                healthz_port=healthz_port,
                bind=bind,
                prometheus_address=prometheus_address,
                lease_duration=lease_duration,
                renew_interval=lease_renew_interval,
            )
        )
        return
    lease_renew_interval = 5.0 if lease_renew_interval is None else lease_renew_interval

    async def main() -> None:
        try:
            host = EmbeddedHost(
                ctx.obj["state"],
                admin_port=admin_port,
                prometheus_address=prometheus_address,
                identity=identity,
                lease_duration=lease_duration,
                lease_renew_interval=lease_renew_interval,
                proxy_process=proxy_process,
            )
        except ValueError as exc:
            fail(f"{exc} (see --lease-duration and --lease-renew-interval)")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stopping = asyncio.ensure_future(stop.wait())
        starting = asyncio.ensure_future(host.start())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # stopped while waiting for the lease
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            await host.close()
            return
        try:
            starting.result()
        except OSError as exc:
            stopping.cancel()
            await host.close()
            fail(f"cannot start: {exc} (is another controller running? choose --admin-port)")
        click.echo(
            f"controller running: state {ctx.obj['state']}, metrics http://127.0.0.1:{host.admin_port}/metrics",
            err=True,
        )
        lost = asyncio.ensure_future(host.lost.wait())
        await asyncio.wait({stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
        if host.lost.is_set():
            # Exit at once, as Kubernetes controllers do: no cleanup that could touch the pods
            # the new leader adopts.
            click.echo(f"error: lost leadership ({host.lost_reason}): exiting", err=True)
            logging.shutdown()
            sys.stderr.flush()
            os._exit(1)
        lost.cancel()
        await host.close()

    _run(main())


def _controller_scope(
    ctx: click.Context, platform: str, namespace: str | None, watch_namespace: str | None, instance_id: str | None
) -> tuple[str | None, str | None]:
    """The controller's namespace (None: all) and instance id (None: objects without one), checked."""
    from rollouts.model.scope import instance_id_error, namespace_error

    if namespace and watch_namespace and namespace != watch_namespace:
        fail(f"--namespace {namespace} and --watch-namespace {watch_namespace} disagree: give only --namespace")
    flag = "--namespace" if namespace else "--watch-namespace"
    namespace = namespace or watch_namespace
    if platform != "kubernetes":
        if namespace is not None or instance_id:
            option = flag if namespace is not None else "--instance-id"
            fail(f"{option} applies to --platform kubernetes (the embedded controller acts on its whole state file)")
        return None, None
    parent = ctx.parent
    if namespace is None and parent is not None:
        # `rollouts -n NS controller`: the global -n, when given explicitly (its default is "default").
        source = parent.get_parameter_source("namespace")
        if source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
            namespace = ctx.obj["namespace"]
    if namespace is not None:
        problem = namespace_error(namespace)
        if problem:
            fail(f"{flag}: {problem}")
    if instance_id:
        problem = instance_id_error(instance_id)
        if problem:
            fail(f"--instance-id: {problem}")
    return namespace, instance_id or None


async def _kubernetes_controller(*, lease_duration: float, renew_interval: float | None, **options: Any) -> None:
    """The operator: serve probes and metrics, wait for the Lease, reconcile until stopped or lost."""
    import os
    import signal

    from kubernetes_asyncio.config import ConfigException

    from rollouts.kube_host import KubeHost

    renew = renew_interval if renew_interval is not None else lease_duration * 2 / 3
    try:
        host = KubeHost(
            lease_duration=lease_duration,
            renew_interval=renew,
            renew_deadline=(renew + lease_duration) / 2,
            **options,
        )
    except ValueError as exc:
        fail(str(exc))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    starting = asyncio.ensure_future(host.start())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await host.close()
        return
    try:
        starting.result()
    except (OSError, ConfigException, StoreError, TimeoutError) as exc:
        stopping.cancel()
        await host.close()
        fail(f"cannot start the Kubernetes controller: {exc} (check --kubeconfig/--context and the API server)")
    scope = f"namespace {host.namespace}" if host.namespace else "all namespaces"
    scope += f", instance id {host.instance_id}" if host.instance_id else ", no instance id"
    lease = f", lease {host.lease_namespace}/{host.lease_name}" if host.leader_elect else ""
    click.echo(
        f"controller running on Kubernetes as {host.identity} ({scope}{lease}): metrics :{host.metrics_port}/metrics, "
        f"healthz :{host.healthz_port}/healthz",
        err=True,
    )
    lost = asyncio.ensure_future(host.lost.wait())
    await asyncio.wait({stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
    if host.lost.is_set():
        click.echo(f"error: lost leadership ({host.lost_reason}): exiting", err=True)
        logging.shutdown()
        sys.stderr.flush()
        os._exit(1)
    lost.cancel()
    await host.close()


@cli.command()
@click.option(
    "--fast/--real-time", default=True, help="Shorten pauses and analysis intervals so the demo takes ~1 minute."
)
@click.option("--keep-state", type=click.Path(path_type=Path), default=None, help="Keep the demo's state file here.")
def demo(fast: bool, keep_state: Path | None) -> None:
    """Run a real canary on this machine: v2 promoted, v3 rolled back by analysis."""
    from rollouts.demo.runner import run_demo

    result = _run(run_demo(fast=fast, state=keep_state))
    sys.exit(0 if result.ok else 1)


@cli.command()
@click.option("--short", is_flag=True)
def version(short: bool) -> None:
    """Print the version."""
    click.echo(__version__ if short else f"rollouts: v{__version__}")


def _run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)

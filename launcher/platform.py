"""Start and stop the whole platform on one machine: PostgreSQL, migrations, Ray, Serve.

`kiki up` runs `Platform.start()` and waits for Ctrl-C or SIGTERM; `kiki up --detach` runs
the same in a background process and returns once every app is healthy. The running
process records itself in `$KIKI_HOME/run/state.json`, which `kiki status` and `kiki down` read.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import httpx
from pydantic import BaseModel

from deployments.ingress import GRPC_MAX_MESSAGE_ENV, configure_ingress
from kiki.artifacts import ArtifactStore
from kiki.auth import authenticate, create_api_key
from kiki.config import APPS, ROOT_APP, Settings
from kiki.db import migrate
from kiki.db.embedded import EmbeddedPostgres, port_in_use
from kiki.db.pool import connect, redact
from kiki.db.wal import WAL, WalShipper
from kiki.errors import ConfigError, KikiError, Unauthenticated, Unavailable
from launcher import serve_config
from launcher.dashboard import ServeRest, nodes, state_api

if TYPE_CHECKING:
    from launcher.first_run import FirstRun

Echo = Callable[[str], None]
# The apps' first start loads torch and models; on a machine busy with other work it has
# taken over two minutes, so wait longer than that before calling a deployment failed.
READY_TIMEOUT_S = 300.0
# The file Ray's dashboard writes (and keeps current) in its session folder: a Prometheus
# file_sd list of every live node's metrics export port.
SERVICE_DISCOVERY_FILE = "prom_metrics_service_discovery.json"


@dataclass
class RunState:
    pid: int
    status: Literal["starting", "ready", "failed", "stopping"]
    http_url: str
    grpc_address: str
    metrics_url: str
    database: str
    embedded_postgres: bool
    dashboard_url: str | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)


def state_path(settings: Settings) -> Path:
    return Path(settings.home) / "run" / "state.json"


def read_state(settings: Settings) -> RunState | None:
    try:
        return RunState(**json.loads(state_path(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_state(settings: Settings, state: RunState) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    spool = settings.wal_spool if settings.wal_archive else None
    timeout = settings.wal_archive_timeout_s
    return EmbeddedPostgres(settings.pgdata, settings.pg_port, spool, timeout)


@contextmanager
def database(settings: Settings, migrated: bool = True):
    """The database URL for one-off commands (`kiki db`, `kiki keys`, `kiki ingest` ...),
    with the schema up to date unless `migrated=False`. The embedded server is started if it
    is not running and stopped again afterwards, leaving things as they were."""
    if settings.database_url:
        if migrated:
            asyncio.run(migrate.migrate_url(settings.database_url))
        yield settings.database_url
        return
    pg = embedded_postgres(settings)
    was_running = pg.is_running()
    if not was_running:
        # On stderr: a command's own output (`--json` above all) stays clean on stdout.
        sys.stderr.write(f"starting embedded PostgreSQL ({pg.pgdata}) for this command\n")
    url = pg.start()
    try:
        if migrated:
            asyncio.run(migrate.migrate_url(url))
        yield url
    finally:
        if not was_running:
            pg.stop()


async def ensure_dev_key(url: str, settings: Settings) -> str:
    """The development API key, kept in $KIKI_HOME/dev_api_key (mode 0600) so every
    `kiki up` prints the same working key; a new one is made if that key stopped working."""
    key_file = Path(settings.home) / "dev_api_key"
    conn = await connect(url)
    try:
        if key_file.exists():
            key = key_file.read_text().strip()
            with suppress(Unauthenticated):
                await authenticate(conn, key)
                return key
        _, key = await create_api_key(conn, settings.dev_tenant, label="development key (kiki up)")
    finally:
        await conn.close()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600)
    key_file.write_text(key + "\n")
    return key


def check_ports_free(settings: Settings, embedded: bool) -> None:
    wanted = [
        (settings.http_port, "KIKI_HTTP_PORT", "HTTP"),
        (settings.grpc_port, "KIKI_GRPC_PORT", "gRPC"),
    ]
    if not settings.ray_address:
        wanted.append((settings.metrics_port, "KIKI_METRICS_PORT", "Ray metrics"))
    if embedded and not embedded_postgres(settings).is_running():
        wanted.append((settings.pg_port, "KIKI_PG_PORT", "embedded PostgreSQL"))
    for port, env, what in wanted:
        # A probe: it binds and lets go at once.
        if port_in_use(port, "0.0.0.0"):  # nosec B104
            raise Unavailable(
                f"port {port} ({what}) is already in use: stop the program that holds it "
                f"(`ss -ltnp 'sport = :{port}'` shows it) or set {env} to a free port"
            )


OPS = Path(__file__).resolve().parent.parent / "ops"


def monitoring_hints(session_dir: str | None) -> list[str]:
    """Where Prometheus finds every node's metrics, and where the alert rules and Grafana
    dashboards are (README, "Operations")."""
    sd = f"{session_dir}/{SERVICE_DISCOVERY_FILE}" if session_dir else None
    return [
        "Prometheus scrape config: file_sd_configs with "
        + (f"{sd} (every node's metrics port; on a cluster, the head node's file)" if sd
           else f"the head node's {SERVICE_DISCOVERY_FILE} in Ray's session folder"),
        f"alert rules: {OPS / 'prometheus' / 'alerts.yml'} (rule_files)",
        f"Grafana dashboards: {OPS / 'grafana'}/*.json (Dashboards > New > Import; data "
        "source: that Prometheus)",
    ]  # fmt: skip


def app_url(settings: Settings, service: str, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{settings.http_port}/{service}"


def health_url(settings: Settings, app: str) -> str:
    """An app's `/health`; the root's (`/health`, no prefix) lists every service."""
    if app == ROOT_APP:
        return f"http://127.0.0.1:{settings.http_port}/health"
    return f"{app_url(settings, app)}/health"


def check_health(settings: Settings, timeout_s: float = 5.0) -> dict[str, tuple[int | None, str]]:
    """Each app's health, the root's included: (HTTP status or None when unreachable, short
    detail)."""
    results: dict[str, tuple[int | None, str]] = {}
    with httpx.Client(timeout=timeout_s) as client:
        for service in APPS:
            try:
                resp = client.get(health_url(settings, service))
            except httpx.HTTPError as exc:
                results[service] = (None, f"unreachable ({exc.__class__.__name__})")
                continue
            detail = "ok"
            try:
                body = resp.json()
                failing = {k: v for k, v in body.get("checks", {}).items() if v != "ok"}
                if failing:
                    detail = "; ".join(f"{k}: {v}" for k, v in failing.items())
            except ValueError:
                detail = resp.text[:80]
            results[service] = (resp.status_code, detail)
    return results


class Platform:
    """One running KIKI: start() brings every part up in order, stop() takes it down."""

    def __init__(self, settings: Settings, echo: Echo, demo: bool = False) -> None:
        self.settings = settings
        self.echo = echo
        # `kiki up` without --no-demo: a development tenant without data gets the demo.
        self.demo = demo
        self.first_run: FirstRun | None = None
        self.pg: EmbeddedPostgres | None = None
        self.database_url: str | None = None
        self.dev_key: str | None = None
        self.state: RunState | None = None
        self._ray_started = False
        self.dashboard_url = ""
        self.shipper: WalShipper | None = None
        # Ray's session folder on this node: where Ray writes Prometheus's service discovery.
        self.session_dir: str | None = None

    def _step(self, text: str) -> None:
        self.echo(f"==> {text}")

    def start(self) -> None:
        s = self.settings
        existing = read_state(s)
        if existing and existing.pid != os.getpid() and pid_alive(existing.pid):
            raise ConfigError(
                f"KIKI is already running (pid {existing.pid}, {existing.status}): "
                "see `kiki status`, or stop it with `kiki down`"
            )
        if s.ray_address and not s.database_url:
            raise ConfigError(
                "RAY_ADDRESS is set but KIKI_DATABASE_URL is not: replicas on other nodes cannot "
                "reach the embedded PostgreSQL; set KIKI_DATABASE_URL to a server they can reach"
            )
        if s.ray_address:
            ArtifactStore.for_cluster(s)  # models written on one node must load on the others
        config = serve_config.load(s.serve_config)
        serve_config.validate_strict(config)
        check_ports_free(s, embedded=not s.database_url)
        Path(s.home).mkdir(parents=True, exist_ok=True)
        self.state = RunState(
            pid=os.getpid(),
            status="starting",
            http_url=f"http://127.0.0.1:{s.http_port}",
            grpc_address=f"127.0.0.1:{s.grpc_port}",
            metrics_url="",
            database="",
            embedded_postgres=not s.database_url,
        )
        write_state(s, self.state)

        if s.database_url:
            self._step(f"PostgreSQL: using {redact(s.database_url)}")
            self.database_url = s.database_url
        else:
            self.pg = embedded_postgres(s)
            self._step(f"PostgreSQL: starting embedded server, data in {self.pg.pgdata}")
            self.database_url = self.pg.start()
            self.echo(f"    listening on 127.0.0.1:{s.pg_port}")
            if s.wal_archive:
                self.shipper = WalShipper(s.wal_spool, ArtifactStore.from_settings(s))
                self.shipper.start()
                self.echo(f"    archiving WAL to {self.shipper.store.url_of(WAL)}")
        self.state.database = redact(self.database_url)

        self._step("migrations")
        applied = asyncio.run(migrate.migrate_url(self.database_url))
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
        self.echo(f"    applied {len(applied)}: {names}" if applied else "    schema up to date")
        self.dev_key = asyncio.run(ensure_dev_key(self.database_url, s))

        self._start_ray()
        self._start_serve(config)
        if self.demo:
            # Imported here: the demo's training stack (torch, XGBoost) takes seconds to load.
            from launcher.first_run import FirstRun

            first_run = FirstRun(self.database_url, s, self.echo)
            if first_run.plan():
                first_run.launch()
                self.first_run = first_run
        self.state.status = "ready"
        write_state(s, self.state)

    def _start_ray(self) -> None:
        import ray

        s = self.settings
        if not s.ray_address:
            self._step(f"ingress: {configure_ingress(s)}")
        if s.ray_address:
            self._step(f"Ray: joining the cluster at {s.ray_address}")
            if secrets := serve_config.secret_env(s):
                self.echo(
                    f"    secrets are not sent to the cluster: set {', '.join(sorted(secrets))} "
                    "in its nodes' environment (cluster.yaml)"
                )
            context = ray.init(address=s.ray_address, namespace="kiki", log_to_driver=False)
            self.state.metrics_url = "the cluster's metrics export port on each node"
        else:
            self._step("Ray: starting a local instance")
            # Secrets reach the workers through the raylet's environment, not runtime_env;
            # so does the largest gRPC message Serve's proxy accepts (2 GiB unless set).
            env = {**serve_config.secret_env(s), GRPC_MAX_MESSAGE_ENV: str(s.max_body_bytes)}
            with serve_config.inherited_env(env):
                context = ray.init(
                    address="local",
                    namespace="kiki",
                    _metrics_export_port=s.metrics_port,
                    include_dashboard=True,
                    log_to_driver=False,
                    configure_logging=False,
                )
            self.state.metrics_url = f"http://127.0.0.1:{s.metrics_port}/metrics"
            self.echo(f"    metrics for Prometheus: {self.state.metrics_url}")
        self.session_dir = context.address_info.get("session_dir")
        for line in monitoring_hints(self.session_dir):
            self.echo(f"    {line}")
        self._ray_started = True
        if not context.dashboard_url:
            raise ConfigError(
                "the Ray cluster runs no dashboard, and Serve's REST API lives there: start "
                "its head with the dashboard (`ray start --head --include-dashboard=true`)"
            )
        self.dashboard_url = self.state.dashboard_url = f"http://{context.dashboard_url}"

    def _start_serve(self, config: dict) -> None:
        """Deploy through Serve's REST API. On a cluster the YAML's CPU and GPU requests
        stand (a GPU deployment at zero replicas must keep asking for its GPU, or no GPU
        node is ever added); a local run shrinks them to fit this machine."""
        import ray
        from ray import serve

        s = self.settings
        if s.ray_address:
            adapted = serve_config.adapt_for_cluster(config, s)
            resources = "CPU and GPU as serve_config.yaml asks"
        else:
            gpus = ray.cluster_resources().get("GPU", 0)
            adapted = serve_config.adapt_for_machine(config, s, gpus)
            resources = f"{s.replica_cpus} CPU per replica, {'GPU' if gpus else 'no GPU'}"
        self._step(
            f"Serve: deploying {len(adapted['applications'])} apps "
            f"(HTTP :{s.http_port}, gRPC :{s.grpc_port}, {resources})"
        )
        ServeRest(self.dashboard_url).deploy(adapted)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            statuses = {name: app.status for name, app in serve.status().applications.items()}
            if all(statuses.get(n) == "RUNNING" for n in APPS):
                break
            failed = {n: st for n, st in statuses.items() if st == "DEPLOY_FAILED"}
            if failed:
                detail = serve.status().applications[next(iter(failed))].message
                raise Unavailable(f"Serve app(s) {', '.join(failed)} failed to deploy: {detail}")
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"Serve apps not running after {READY_TIMEOUT_S:.0f}s: {statuses}; the "
                    f"cluster has {ray.available_resources()} free (replicas may be waiting "
                    "for resources)"
                )
            time.sleep(0.5)
        # RUNNING means replicas are up; wait for the proxy to route to every prefix too.
        while any(code != 200 for code, _ in check_health(s).values()):
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"apps not healthy after {READY_TIMEOUT_S:.0f}s: {check_health(s)}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        """Serve, Ray, then PostgreSQL; each step runs even if an earlier one failed."""
        s = self.settings
        if self.state:
            self.state.status = "stopping"
            write_state(s, self.state)
        if self.first_run is not None:
            self.first_run.stop()
        if self._ray_started:
            import ray

            self._clear_ray()
            # A local Ray goes down whole, Serve with it: its ordered shutdown waits out
            # drain timeouts (30 s with the HAProxy ingress) that a stopping machine does
            # not need.
            self._step("stopping Ray")
            ray.shutdown()
            self._ray_started = False
        if self.pg is not None:
            self._step("stopping embedded PostgreSQL")
            try:
                self.pg.stop()
            except Exception as exc:
                self.echo(f"    PostgreSQL did not stop cleanly: {exc}")
        if self.shipper is not None:  # after the server: it archives its last segments
            self.shipper.stop()
        with suppress(FileNotFoundError):
            state_path(s).unlink()

    def _clear_ray(self) -> None:
        """Take KIKI off Ray, each step even if an earlier one failed: the bid loop settled,
        the apps removed (on a cluster; a local Ray goes down whole), then every KIKI actor
        ended, as they are detached and would outlive the apps."""
        from ray import serve

        from actors.registry import settle_every_bid_loop, stop_kiki_actors

        self._step("settling the bid loop: open leases committed, audit trail flushed")
        try:
            rows = settle_every_bid_loop(state_api(self.dashboard_url))
            self.echo(f"    {rows:,} decisions in the audit trail")
        except Exception as exc:  # keep going: the rest must still stop
            self.echo(f"    the bid loop did not settle: {describe_failure(exc)}")
        if self.settings.ray_address:
            # A shared cluster: take our apps off it and leave the rest alone.
            self._step("removing the apps from Serve")
            try:
                running = serve.status().applications
                for name in APPS:
                    if name in running:
                        serve.delete(name)
            except Exception as exc:
                self.echo(f"    Serve did not stop cleanly: {describe_failure(exc)}")
        self._step("ending KIKI's actors (namespace kiki)")
        try:
            ended = stop_kiki_actors(state_api(self.dashboard_url))
            self.echo(f"    ended {', '.join(ended)}" if ended else "    none left")
        except Exception as exc:
            self.echo(f"    the actors did not stop: {describe_failure(exc)}")

    def clear_cluster(self) -> None:
        """`kiki down` against RAY_ADDRESS with no `kiki up` process: what its stop would
        do on the cluster. After `serve deploy`, or after a `serve shutdown` that left the
        detached actors running; idempotent."""
        import ray

        self._step(f"Ray: joining the cluster at {self.settings.ray_address}")
        context = ray.init(address=self.settings.ray_address, namespace="kiki", log_to_driver=False)
        self.dashboard_url = f"http://{context.dashboard_url}"
        try:
            self._clear_ray()
        finally:
            ray.shutdown()

    def stop_leftovers(self, state: RunState) -> None:
        """After a `kiki up` process died without cleaning up: stop its embedded PostgreSQL."""
        if state.embedded_postgres:
            pg = embedded_postgres(self.settings)
            if pg.is_running():
                self._step("stopping embedded PostgreSQL left running")
                pg.stop()
        with suppress(FileNotFoundError):
            state_path(self.settings).unlink()


class Placed(BaseModel):
    """One Serve replica (`app/Deployment`) or KIKI actor, and the node it runs on."""

    name: str
    kind: Literal["replica", "actor"]
    state: str
    node_id: str
    node_ip: str


def placement(dashboard_url: str) -> list[Placed]:
    """Which node runs what: every replica of KIKI's apps (Serve's REST API) and every KIKI
    actor (Ray's state API), both read from the cluster's dashboard."""
    from actors.registry import kiki_actors

    details = ServeRest(dashboard_url, timeout_s=10).details()
    placed = [
        Placed(name=f"{app_name}/{dep_name}", kind="replica", state=str(replica.state.value),
               node_id=replica.node_id or "", node_ip=replica.node_ip or "")
        for app_name, app in sorted(details.applications.items()) if app_name in APPS
        for dep_name, dep in sorted(app.deployments.items())
        for replica in dep.replicas
    ]  # fmt: skip
    state = state_api(dashboard_url)
    ips = {node.node_id: node.node_ip for node in nodes(state)}
    placed += [
        Placed(name=actor.name, kind="actor", state=actor.state, node_id=actor.node_id or "",
               node_ip=ips.get(actor.node_id, ""))
        for actor in sorted(kiki_actors(state), key=lambda a: a.name)
        if actor.name
    ]  # fmt: skip
    return placed


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, KikiError):
        return exc.message
    return f"{exc.__class__.__name__}: {exc}"

"""Real services on 127.0.0.1 for the production tests: PostgreSQL, Redis, the Dagster daemon and
webserver, and Celery workers, each a separate process with its own log file.

Servers come from Debian packages that `make services` installs (postgresql, redis-server); the
tests never talk to a stand-in. PostgreSQL and Redis start once per test session (the first test
that asks) and stop at exit; each test gets its own database. Every wait has a timeout and names
what it waited for, with the tail of the process's log. Every service runs in its own process group
watched by `tests/support/reaper.py`, so it dies with the test worker that started it, even a SIGKILLed one.

Why not pytest-postgresql / pytest-redis: they start their servers through mirakuru, which puts each
in a new session (`setsid`) and kills leftovers from an `atexit` hook and fixture teardown. A SIGKILLed
or segfaulted worker runs neither, so its servers outlive it and hold their ports; the reaper (a watcher
process on a pipe from the worker) is what gives the parent-death cleanup, so the hand version stays.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from resources.doubles.http_server import free_port
from support.reaper import reap_with_parent

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROD_INSTANCE_YAML = ROOT / "deploy" / "production" / "dagster.yaml"
CELERY_YAML = ROOT / "deploy" / "production" / "celery.yaml"
MISSING = "install it with `make services` (apt-get: postgresql redis-server chromium fonts-noto-cjk)"


def wait_until(check: Callable[[], bool], timeout: float, what: str, procs: tuple[Proc, ...] = ()) -> None:
    """Poll `check` until true; fail naming `what` (and the logs of `procs`) on timeout or if one exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode} while waiting for {what}\n{p.tail()}")
        if check():
            return
        time.sleep(0.3)
    logs = "\n".join(p.tail() for p in procs)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")


@dataclass
class Proc:
    """A child process in its own process group, logging to a file."""

    name: str
    popen: subprocess.Popen
    log: Path
    watcher: subprocess.Popen | None = None

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} log ({self.log}) ---\n{text[-chars:]}"

    def stop(self, timeout: float = 20) -> None:
        try:
            if self.popen.poll() is None:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        except ProcessLookupError:
            pass
        finally:
            if self.watcher is not None:  # its group is gone: let the watcher end before the pgid is reused
                self.watcher.stdin.close()
                self.watcher.wait(10)
                self.watcher = None


def start(
    name: str,
    argv: list[str],
    log_dir: Path,
    env: dict | None = None,
    cwd: Path = ROOT,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    with log.open("ab") as out:
        popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    proc = Proc(name, popen, log, reap_with_parent(popen, stop_signal))
    _started.append(proc)
    return proc


_started: list[Proc] = []
_temp_dirs: list[Path] = []


def _temp_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _temp_dirs.append(path)
    return path


@atexit.register
def _stop_all() -> None:
    for proc in reversed(_started):
        proc.stop()
    for path in _temp_dirs:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    port: int
    user: str
    password: str
    proc: Proc
    data_dir: Path

    def env(self, db: str) -> dict[str, str]:
        """What deploy/production/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": db,
        }

    def connect(self, db: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=db, connect_timeout=3
        )

    def create_database(self, prefix: str) -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return name


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise FileNotFoundError(f"PostgreSQL server binaries not found under /usr/lib/postgresql: {MISSING}")
    return Path(found[-1]).parent


def _pg_ready(pg_user: str, password: str, port: int) -> bool:
    import psycopg2

    try:
        psycopg2.connect(
            host="127.0.0.1", port=port, user=pg_user, password=password, dbname="postgres", connect_timeout=2
        ).close()
        return True
    except psycopg2.OperationalError:
        return False


def start_postgres(log_dir: Path) -> Postgres:
    """initdb + postgres on a free port, password auth, TCP on 127.0.0.1 only (no unix socket)."""
    bin_dir = _pg_bin()
    # PostgreSQL refuses to run as root: run it as the `postgres` user the Debian package creates
    run_as = "postgres" if os.geteuid() == 0 else None
    data = _temp_dir("qc-pg-")
    password = secrets.token_urlsafe(16)
    pwfile = data / "pw"
    pwfile.write_text(password)
    if run_as:
        shutil.chown(data, run_as)
        shutil.chown(pwfile, run_as)
    db_dir = data / "db"
    subprocess.run(
        (["runuser", "-u", run_as, "--"] if run_as else [])
        + [
            str(bin_dir / "initdb"),
            "-D",
            str(db_dir),
            "-U",
            "qc",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    proc = start(
        "postgres",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(db_dir),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ],
        log_dir,
        user=run_as,
        stop_signal=signal.SIGINT,
    )
    wait_until(lambda: _pg_ready("qc", password, port), 60, f"PostgreSQL on 127.0.0.1:{port}", (proc,))
    return Postgres(port, "qc", password, proc, data)


# ---------------------------------------------------------------- Redis


@dataclass
class Redis:
    port: int
    password: str
    proc: Proc

    def url(self, db: int) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"


def _redis_ready(port: int, password: str) -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=2).ping())
    except redis.exceptions.ConnectionError:
        return False


def start_redis(log_dir: Path) -> Redis:
    exe = shutil.which("redis-server")
    if not exe:
        raise FileNotFoundError(f"redis-server not found on PATH: {MISSING}")
    password = secrets.token_urlsafe(16)
    port = free_port()
    work = _temp_dir("qc-redis-")
    proc = start(
        "redis",
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            password,
            "--dir",
            str(work),
            "--databases",
            "64",
        ],
        log_dir,
    )
    wait_until(lambda: _redis_ready(port, password), 30, f"Redis on 127.0.0.1:{port}", (proc,))
    return Redis(port, password, proc)


_shared: dict[str, object] = {}


def shared_postgres() -> Postgres:
    """One PostgreSQL per test session (tests take their own database)."""
    if "pg" not in _shared:
        _shared["pg"] = start_postgres(_temp_dir("qc-services-"))
    return _shared["pg"]  # type: ignore[return-value]


def shared_redis() -> Redis:
    if "redis" not in _shared:
        _shared["redis"] = start_redis(_temp_dir("qc-services-"))
    return _shared["redis"]  # type: ignore[return-value]


_redis_dbs = iter(range(1, 64))


# ---------------------------------------------------------------- Dagster on the production profile


@dataclass
class Deployment:
    """A production-profile Dagster deployment for one test: its own DAGSTER_HOME, database and broker db."""

    home: Path
    env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def instance(self):
        import dagster as dg

        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # the instance yaml reads DAGSTER_PG_* from the environment
        try:
            return dg.DagsterInstance.from_config(str(self.home))
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def daemon(self) -> Proc:
        proc = start(
            "dagster-daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], self.log_dir, self.env
        )
        self.procs.append(proc)
        return proc

    def worker(self, name: str, queues: tuple[str, ...] = ("gpu", "dagster")) -> Proc:
        """A Celery worker (prefork pool, one child: one step at a time) on the given queues."""
        argv = [
            str(VENV_BIN / "dagster-celery"),
            "worker",
            "start",
            "-A",
            "dagster_celery.app",
            # one comma-separated -q: celery 5 keeps only the last of several -Q flags
            "-y",
            str(CELERY_YAML),
            "-n",
            name,
            "-q",
            ",".join(queues),
            "--",
            "--concurrency",
            "1",
            "--pool",
            "prefork",
        ]
        proc = start(f"celery-{name}", argv, self.log_dir, self.env)
        self.procs.append(proc)
        wait_until(
            lambda: " ready." in proc.log.read_text(errors="replace"), 120, f"Celery worker {name} ready", (proc,)
        )
        return proc

    def webserver(self) -> tuple[Proc, str]:
        port = free_port()
        proc = start(
            "dagster-webserver",
            [str(VENV_BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            self.log_dir,
            self.env,
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _http_ok(f"{url}/server_info"), 180, f"dagster-webserver at {url}", (proc,))
        return proc, url

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def run_cli(argv: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """Run a command to completion in its own process group, then end whatever it left behind (the
    `dagster` CLI starts a code server of its own)."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    watcher = reap_with_parent(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group has already ended
            os.killpg(proc.pid, signal.SIGKILL)
        watcher.stdin.close()
        watcher.wait(10)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def production_deployment(tmp: Path, extra_env: dict[str, str], executor: str = "celery") -> Deployment:
    """DAGSTER_HOME with deploy/production/dagster.yaml verbatim, a fresh database, a fresh broker db."""
    pg, redis = shared_postgres(), shared_redis()
    home = tmp / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(PROD_INSTANCE_YAML, home / "dagster.yaml")
    broker = redis.url(next(_redis_dbs))
    env = {
        **os.environ,
        **pg.env(pg.create_database("dagster")),
        **extra_env,
        "DAGSTER_HOME": str(home),
        "QC_EXECUTOR": executor,
        "QC_CELERY_BROKER": broker,
        "QC_CELERY_BACKEND": broker,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "QC_CPU_THREADS": "1",
    }
    return Deployment(home, env, tmp / "logs")

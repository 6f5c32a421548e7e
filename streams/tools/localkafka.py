"""Run a real single-node Kafka (KRaft, broker+controller in one JVM) from jars fetched with Maven.

Used by `leadrelay kafka start|stop|status`, the integration tests and the demo. Stdlib only: readiness
and `status` speak just enough of the Kafka protocol (one Metadata v1 round trip) to know the broker
serves requests, so they stay cheap and import no client library.

State layout (one broker per state dir): `server.properties`, `data/` (log.dirs), `kafka.log`
(broker stdout/stderr) and `broker.json` (pid and ports, present only while a broker is recorded).

`start(security=SecuritySetup(...))` adds secured listeners next to PLAINTEXT (tests of TLS and SASL):
an SSL listener that requires a client certificate (mutual TLS) and/or a SASL_SSL listener with SCRAM
users created at format time. PLAINTEXT stays for the controller, inter-broker traffic and the probe.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

KAFKA_VERSION = "3.9.1"
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
_MARKER_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
_CORRELATION_ID = 0x1EAD
_SPAWNED: set[int] = set()  # brokers this process started, i.e. our children that we must reap


@dataclass(frozen=True)
class KafkaHandle:
    """A running broker: clients use `bootstrap` ("127.0.0.1:PORT")."""

    bootstrap: str
    pid: int
    data_dir: Path
    state_dir: Path
    controller_port: int
    ssl_bootstrap: str | None = None  # mutual TLS listener (start(security=...) with mtls=True)
    sasl_ssl_bootstrap: str | None = None  # SASL_SSL/SCRAM listener (start(security=...) with scram_users)


_SCRAM_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")  # no quoting needed in `format --add-scram` or JAAS


@dataclass(frozen=True)
class SecuritySetup:
    """Secured listeners of a broker started by `start(security=...)`.

    keystore: the broker's key and certificate chain; truststore: the CA(s) it trusts for client
    certificates. With store_type PEM, keystore is one file with a PKCS#8 private key followed by the
    certificate chain, truststore a file of CA certificates; JKS/PKCS12 stores need store_password.
    key_password: only for an encrypted private key. mtls: an SSL listener requiring a client
    certificate (ssl.client.auth=required). scram_users (name -> password): a SASL_SSL listener with
    scram_mechanism; the credentials are written into the cluster metadata when the log is formatted,
    so they apply to fresh starts (fresh=False reuses server.properties and the users as they were).
    acls: enforce ACLs (StandardAuthorizer, deny unless allowed); the PLAINTEXT listener's User:ANONYMOUS
    (controller, inter-broker, the probe, and whoever administers the ACLs in tests) is a super user.
    """

    keystore: Path
    truststore: Path
    store_type: Literal["PEM", "JKS", "PKCS12"] = "PEM"
    store_password: str | None = None
    key_password: str | None = None
    mtls: bool = True
    scram_users: Mapping[str, str] = field(default_factory=dict)
    scram_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    acls: bool = False

    def __post_init__(self) -> None:
        if not self.mtls and not self.scram_users:
            raise ValueError("SecuritySetup needs mtls=True and/or scram_users")
        if (self.store_type == "PEM") == (self.store_password is not None):
            raise ValueError("JKS/PKCS12 stores need store_password; PEM files take none (key_password only)")
        for name, password in self.scram_users.items():
            if not (_SCRAM_SAFE.match(name) and _SCRAM_SAFE.match(password)):
                raise ValueError(f"SCRAM user {name!r}: use letters, digits, '.', '_' and '-' only")


def ensure_jars(cache_dir: Path | None = None) -> Path:
    """Return the directory of Kafka's runtime jars, fetching them with Maven on first use."""
    cache = Path(cache_dir or os.environ.get("LEADRELAY_CACHE") or Path.home() / ".cache" / "leadrelay")
    home = cache / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    if (libs / _MARKER_JAR).is_file():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if (libs / _MARKER_JAR).is_file():  # another process fetched them while we waited for the lock
            return libs
        pom = DEPLOY_DIR / "pom.xml"
        if not pom.is_file():
            raise RuntimeError(f"{pom} not found: run from a leadrelay checkout")
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Maven (mvn) is needed once to fetch the Kafka jars; install it and retry")
        with tempfile.TemporaryDirectory(dir=home, prefix=".fetch-") as tmp:
            shutil.copy(pom, tmp)
            cmd = [mvn, "-B", "-q", "dependency:copy-dependencies", "-DoutputDirectory=libs"]
            proc = subprocess.run(
                [*cmd, "-DincludeScope=runtime"], cwd=tmp, capture_output=True, text=True, check=False
            )
            fetched = Path(tmp) / "libs"
            if proc.returncode or not (fetched / _MARKER_JAR).is_file():
                out = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
                raise RuntimeError(f"fetching Kafka {KAFKA_VERSION} jars with mvn failed:\n{out}")
            shutil.rmtree(libs, ignore_errors=True)  # an incomplete copy left by hand, never by us
            fetched.rename(libs)  # atomic: readers see no libs dir or a complete one
    return libs


def start(
    state_dir: Path | None = None,
    *,
    heap: str = "512m",
    timeout: float = 90.0,
    fresh: bool = True,
    security: SecuritySetup | None = None,
) -> KafkaHandle:
    """Start a broker for state_dir, or return the one already serving there.

    fresh=True wipes the data and picks new ports; fresh=False reuses both when a formatted data dir
    exists (broker-restart tests). timeout covers broker startup, not the one-off jar download.
    security adds secured listeners (see SecuritySetup) on a fresh start.
    """
    state = _state_dir(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    with _locked(state / ".lock"):
        recorded = _recorded(state)
        if recorded and _ours(recorded.pid, state):
            with contextlib.suppress(RuntimeError):
                _wait_ready(recorded, timeout)
                return recorded
            _terminate(state, signal.SIGKILL, 10)  # alive but never answered: wedged, replace it
        libs = ensure_jars()
        props, data_dir, log = state / "server.properties", state / "data", state / "kafka.log"
        if not fresh and (data_dir / "meta.properties").is_file() and props.is_file():
            ports = _listener_ports(_prop(props, "listeners"))
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
            log.unlink(missing_ok=True)
            names = ["PLAINTEXT", "CONTROLLER", *_secure_listeners(security)]
            ports = dict(zip(names, _free_ports(len(names)), strict=True))
            props.write_text(_server_properties(data_dir, ports["PLAINTEXT"], ports["CONTROLLER"], security, ports))
            if security is not None:
                props.chmod(0o600)  # may hold keystore passwords
            fmt = ["kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", str(props)]
            if security is not None:
                for name, password in security.scram_users.items():
                    fmt += ["--add-scram", f"{security.scram_mechanism}=[name={name},password={password}]"]
            tool = [*_java(libs, "256m"), "-XX:TieredStopAtLevel=1", *fmt]  # short-lived: C1 is enough
            proc = subprocess.run(tool, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise RuntimeError(f"kafka-storage format failed:\n{proc.stdout}{proc.stderr}")
        port, cport = ports["PLAINTEXT"], ports["CONTROLLER"]
        pid = _spawn([*_java(libs, heap), "kafka.Kafka", str(props)], log)
        secured = {k: v for k, v in ports.items() if k in ("SSL", "SASL_SSL")}
        handle = _handle(state, pid, data_dir, port, cport, secured)
        record = {"pid": pid, "port": port, "controller_port": cport, "data_dir": str(data_dir)}
        (state / "broker.json").write_text(json.dumps({**record, "secured_ports": secured}))
        try:
            _wait_ready(handle, timeout)
        except BaseException:
            _terminate(state, signal.SIGKILL, 10)
            raise
        return handle


def stop(state_dir: Path | None = None, *, timeout: float = 30.0) -> bool:
    """SIGTERM the broker (SIGKILL after timeout); return whether one was running."""
    state = _state_dir(state_dir)
    if not state.is_dir():
        return False
    with _locked(state / ".lock"):
        return _terminate(state, signal.SIGTERM, timeout)


def kill(state_dir: Path | None = None) -> bool:
    """SIGKILL the broker, as a crash would (chaos tests); return whether one was running."""
    state = _state_dir(state_dir)
    if not state.is_dir():
        return False
    with _locked(state / ".lock"):
        return _terminate(state, signal.SIGKILL, 10)


def status(state_dir: Path | None = None) -> KafkaHandle | None:
    """The broker recorded for state_dir if it is ours, alive and answering Metadata requests."""
    handle = _recorded(_state_dir(state_dir))
    if handle and _ours(handle.pid, handle.state_dir) and _probe(handle.bootstrap):
        return handle
    return None


def main(argv: list[str] | None = None) -> int:
    """CLI: start | stop | kill | status, each with --state-dir."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None, help="default: ./.state/kafka")
    parser = argparse.ArgumentParser(prog="localkafka", description="Local single-node Kafka (KRaft).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", parents=[common], help="start (or find) the broker, print bootstrap")
    p_start.add_argument("--heap", default="512m")
    p_start.add_argument("--timeout", type=float, default=90.0)
    p_start.add_argument("--keep", action="store_true", help="reuse data dir and ports (fresh=False)")
    sub.add_parser("stop", parents=[common], help="SIGTERM the broker")
    sub.add_parser("kill", parents=[common], help="SIGKILL the broker")
    sub.add_parser("status", parents=[common], help="print bootstrap, exit 1 if not running")
    args = parser.parse_args(argv)
    if args.command == "start":
        try:
            handle = start(args.state_dir, heap=args.heap, timeout=args.timeout, fresh=not args.keep)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"kafka {KAFKA_VERSION} pid {handle.pid}, state in {handle.state_dir}", file=sys.stderr)
        print(handle.bootstrap)
        return 0
    if args.command in ("stop", "kill"):
        stopped = (stop if args.command == "stop" else kill)(args.state_dir)
        print("stopped" if stopped else "not running")
        return 0
    running = status(args.state_dir)
    print(running.bootstrap if running else "not running")
    return 0 if running else 1


def _state_dir(state_dir: Path | None) -> Path:
    if state_dir is None:
        root = os.environ.get("LEADRELAY_STATE")
        state_dir = Path(root) / "kafka" if root else Path.cwd() / ".state" / "kafka"
    # Absolute, because the path is matched against the broker's command line to recognise it.
    return Path(state_dir).expanduser().resolve()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _recorded(state: Path) -> KafkaHandle | None:
    try:
        rec = json.loads((state / "broker.json").read_text())
        secured = {str(k): int(v) for k, v in rec.get("secured_ports", {}).items()}
        return _handle(state, int(rec["pid"]), Path(rec["data_dir"]), rec["port"], rec["controller_port"], secured)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _handle(state: Path, pid: int, data_dir: Path, port: int, cport: int, secured: Mapping[str, int]) -> KafkaHandle:
    def address(name: str) -> str | None:
        return f"127.0.0.1:{secured[name]}" if name in secured else None

    return KafkaHandle(f"127.0.0.1:{port}", pid, data_dir, state, cport, address("SSL"), address("SASL_SSL"))


def _alive(pid: int) -> bool:
    if pid in _SPAWNED:  # our child: collect its exit status so it does not linger as a zombie
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                _SPAWNED.discard(pid)
                return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _ours(pid: int, state: Path) -> bool:
    """pid is a live kafka.Kafka run on state's server.properties (guards against reused pids)."""
    if not _alive(pid):  # first, so that an exited child of ours is reaped
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "kafka.Kafka" in argv and str(state / "server.properties") in argv


def _terminate(state: Path, sig: signal.Signals, timeout: float) -> bool:
    handle = _recorded(state)
    stopped = False
    if handle and _ours(handle.pid, state):
        os.kill(handle.pid, sig)
        stopped = True
        if not _wait_exit(handle.pid, timeout):
            os.kill(handle.pid, signal.SIGKILL)
            _wait_exit(handle.pid, 10)
    (state / "broker.json").unlink(missing_ok=True)
    return stopped


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _wait_ready(handle: KafkaHandle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _probe(handle.bootstrap):
        if not _alive(handle.pid):
            raise RuntimeError(f"Kafka (pid {handle.pid}) exited during startup:\n{_tail(handle)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka (pid {handle.pid}) not ready after {timeout:.0f}s:\n{_tail(handle)}")
        time.sleep(0.2)


def _probe(bootstrap: str, timeout: float = 2.0) -> bool:
    """A Metadata v1 request is answered and lists a live broker (a TCP accept is not enough)."""
    host, _, port = bootstrap.rpartition(":")
    client_id = b"leadrelay-localkafka"
    # Header v1: api_key 3 (Metadata), version 1, correlation id, client id; body: empty topic array.
    request = struct.pack(">hhih", 3, 1, _CORRELATION_ID, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            if not 8 <= size <= 1 << 20:
                return False
            correlation_id, n_brokers = struct.unpack_from(">ii", _recv_exactly(sock, size))
    except (OSError, ValueError, struct.error):
        return False
    return bool(correlation_id == _CORRELATION_ID and n_brokers > 0)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return buf


def _tail(handle: KafkaHandle, n: int = 40) -> str:
    log = handle.state_dir / "kafka.log"
    try:
        with log.open(errors="replace") as fh:
            return f"--- last {n} lines of {log} ---\n" + "".join(collections.deque(fh, maxlen=n))
    except OSError:
        return f"(no log at {log})"


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]  # all open at once: distinct
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def _cluster_id() -> str:
    # Same shape as `kafka-storage random-uuid` (url-safe base64 of 16 random bytes, unpadded) without
    # paying for a JVM start. Kafka never hands out ids starting with "-": they read as CLI flags.
    while (cid := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cid


def _prop(path: Path, key: str) -> str:
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    raise RuntimeError(f"{key} missing from {path}")


def _listener_ports(listeners: str) -> dict[str, int]:
    """{"PLAINTEXT": 9092, "CONTROLLER": 9093, ...} from `NAME://127.0.0.1:PORT,...`."""
    return {name: int(port) for name, port in re.findall(r"([A-Z_]+)://127\.0\.0\.1:(\d+)", listeners)}


def _secure_listeners(security: SecuritySetup | None) -> list[str]:
    if security is None:
        return []
    return (["SSL"] if security.mtls else []) + (["SASL_SSL"] if security.scram_users else [])


def _security_properties(security: SecuritySetup, ports: Mapping[str, int]) -> dict[str, object]:
    """Listeners and TLS/SASL settings added to the PLAINTEXT+CONTROLLER base (see SecuritySetup)."""
    secured = _secure_listeners(security)  # listener names are their protocols: SSL, SASL_SSL

    def listeners(*names: str) -> str:
        return ",".join(f"{n}://127.0.0.1:{ports[n]}" for n in names)

    props: dict[str, object] = {
        "listeners": listeners("PLAINTEXT", "CONTROLLER", *secured),
        "advertised.listeners": listeners("PLAINTEXT", *secured),
        "listener.security.protocol.map": ",".join(f"{n}:{n}" for n in ("PLAINTEXT", *secured))
        + ",CONTROLLER:PLAINTEXT",
        "ssl.keystore.type": security.store_type,
        "ssl.keystore.location": Path(security.keystore).resolve(),
        "ssl.truststore.type": security.store_type,
        "ssl.truststore.location": Path(security.truststore).resolve(),
    }
    if security.store_password is not None:
        props["ssl.keystore.password"] = props["ssl.truststore.password"] = security.store_password
    if security.key_password is not None:
        props["ssl.key.password"] = security.key_password
    if security.mtls:
        props["listener.name.ssl.ssl.client.auth"] = "required"
    if security.scram_users:
        mechanism = security.scram_mechanism
        props["sasl.enabled.mechanisms"] = mechanism
        props[f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        )
    if security.acls:
        props["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
        props["allow.everyone.if.no.acl.found"] = "false"
        props["super.users"] = "User:ANONYMOUS"
    return props


def _server_properties(
    data_dir: Path,
    port: int,
    cport: int,
    security: SecuritySetup | None = None,
    ports: Mapping[str, int] | None = None,
) -> str:
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@127.0.0.1:{cport}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": data_dir,
        "num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        # 50 partitions each (the default) makes the first group join/transaction slow on 2 cores.
        "offsets.topic.num.partitions": 10,
        "transaction.state.log.num.partitions": 10,
        "group.initial.rebalance.delay.ms": 0,
        "log.retention.check.interval.ms": 30000,
        # Sized for a laptop/CI box: fewer threads, and a 16 MiB (not 128 MiB) compaction buffer so
        # compacted topics (faust changelogs, __consumer_offsets) fit a small heap.
        "num.network.threads": 2,
        "num.io.threads": 4,
        "log.cleaner.dedupe.buffer.size": 16 * 1024 * 1024,
        # After a crash the controller rejects the new incarnation (DUPLICATE_BROKER_REGISTRATION)
        # until the old session expires: 9 s by default, so restart-after-kill took ~14 s.
        "broker.heartbeat.interval.ms": 500,
        "broker.session.timeout.ms": 3000,
    }
    if security is not None:
        props.update(_security_properties(security, ports or {}))
    header = "# Written by streams/tools/localkafka.py; rewritten on every fresh start.\n"
    return header + "".join(f"{key}={value}\n" for key, value in props.items())


def _java(libs: Path, heap: str) -> list[str]:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        raise RuntimeError("java not found (install a JDK 17+ or set JAVA_HOME)")
    log4j = DEPLOY_DIR / "log4j.properties"
    # The GC flags are the ones kafka-run-class.sh uses; same heap min/max avoids resize pauses.
    opts = [f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
    opts += ["-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent"]
    opts += ["-XX:+ExitOnOutOfMemoryError", "-Xshare:auto", "-Djava.awt.headless=true"]
    if log4j.is_file():
        opts.append(f"-Dlog4j.configuration=file:{log4j}")
    return [java, *opts, "-cp", str(libs / "*")]


def _spawn(argv: list[str], log: Path) -> int:
    # posix_spawn, not Popen: a Popen object dropped while the detached broker runs warns
    # (ResourceWarning, an error under the test suite's filterwarnings); we reap the child in _alive.
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), flags, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    with log.open("a") as fh:
        fh.write(f"=== localkafka: starting Kafka {KAFKA_VERSION} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    # setsid: the broker outlives the CLI and ignores Ctrl-C sent to the terminal's process group.
    pid = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions, setsid=True)
    _SPAWNED.add(pid)
    return pid


if __name__ == "__main__":
    sys.exit(main())

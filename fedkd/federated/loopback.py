"""The fedkd app on a real Flower deployment on one machine: a SuperLink, N SuperNodes, ``flwr run``.

By default everything talks over 127.0.0.1 without TLS (``--insecure``). With ``tls`` (a
:class:`fedkd.federated.certs.TlsFiles`) the SuperLink serves TLS and SuperNodes and the ``flwr``
CLI verify it with the CA certificate; with ``node_keys`` as well, the SuperLink runs with
``--enable-supernode-auth``: the public keys in ``authorized`` are registered
(``flwr supernode register``) and each SuperNode signs with its private key, so a SuperNode with
an unregistered key is refused. Each SuperNode gets its partition with
``--node-config "partition-id=<i> num-partitions=<N>"``; Flower's state and the installed app
live in a private ``FLWR_HOME`` under ``workdir``. :class:`LoopbackDeployment` stops every process
it started (and their children) when its ``with`` block ends, also after an error.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from fedkd.errors import FedkdError
from fedkd.federated.certs import TlsFiles

REPO = Path(__file__).resolve().parents[2]
CONNECTION = "loopback"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Block until 127.0.0.1:``port`` accepts connections (or ``process`` exits, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise FedkdError(
                f"a Flower process exited with code {process.returncode} before listening on {port}; see its log"
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise FedkdError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s; see the SuperLink log")


def _children(pid: int) -> list[int]:
    """Descendants of ``pid`` (Linux ``/proc``; an empty list elsewhere)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # Field 4 of /proc/<pid>/stat is the parent pid (after the parenthesised name).
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class RunOutput:
    """What ``flwr run --stream`` printed and returned (its exit code is 0 even when the run failed)."""

    returncode: int
    output: str


class LoopbackDeployment:
    """``flower-superlink`` plus ``nodes`` ``flower-supernode`` processes on 127.0.0.1.

    ``with LoopbackDeployment(2, workdir) as dep: dep.run("rounds=2", out_dir)``.

    With ``simulation=True`` the SuperLink runs Flower's simulation runtime instead (``--simulation``,
    no SuperNode processes; ``nodes`` virtual ones, one Ray CPU each): the ``flwr run`` path of
    an in-process ``fedkd-sim`` run.
    """

    def __init__(
        self, nodes: int, workdir: str | Path, app_dir: str | Path = REPO, simulation: bool = False,
        tls: TlsFiles | None = None, node_keys: list[Path] | None = None, authorized: list[Path] | None = None,
    ) -> None:
        if node_keys is not None and tls is None:
            raise FedkdError("SuperNode authentication needs TLS; give tls=make_tls_files(folder) as well")
        self.nodes = nodes
        self.simulation = simulation
        self.tls = tls
        self.node_keys = node_keys  # private key of SuperNode i (partition i); None: no authentication
        self.authorized = authorized if authorized is not None else [Path(f"{k}.pub") for k in node_keys or []]
        self.workdir = Path(workdir).resolve()
        self.app_dir = Path(app_dir).resolve()
        self.home = self.workdir / "flwr-home"
        self.bin = Path(sys.executable).parent
        self.port = free_port()
        self.processes: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            # Without this, Flower would install the app's dependencies (a new torch) per run.
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            # The SuperLink and SuperNodes start flower-superexec and flwr-* by name.
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # ------------------------------------------------------------------ processes
    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(
            [str(self.bin / args[0]), *args[1:]], stdout=log, stderr=subprocess.STDOUT, env=self.env,
            cwd=self.workdir, start_new_session=True,
        )
        process.log_file = log  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def start(self, timeout: float = 60.0) -> None:
        """Start the SuperLink, wait until it listens, start the SuperNodes, write the CLI's connection."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        security = f'root-certificates = "{self.tls.ca_cert.resolve()}"' if self.tls else "insecure = true"
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{self.port}"\n{security}\n'
        )
        mode = ["--simulation"] if self.simulation else []
        if self.tls is None:
            secure = ["--insecure"]
        else:
            secure = ["--ssl-ca-certfile", str(self.tls.ca_cert), "--ssl-certfile", str(self.tls.server_cert),
                      "--ssl-keyfile", str(self.tls.server_key)]
            secure += ["--enable-supernode-auth"] if self.node_keys is not None else []
        link = self._start(
            "superlink", ["flower-superlink", *secure, *mode, "--host", "127.0.0.1", "--port", str(self.port)]
        )
        wait_for_port(self.port, timeout, link)
        if self.node_keys is not None:
            for public in self.authorized:
                self.register(public)
        for i in range(0 if self.simulation else self.nodes):
            self.add_supernode(i, self.node_keys[i] if self.node_keys is not None else None)

    def register(self, public_key: Path) -> None:
        """Register a SuperNode's public key with the SuperLink (``flwr supernode register``)."""
        done = subprocess.run(
            [str(self.bin / "flwr"), "supernode", "register", str(public_key), CONNECTION],
            env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=120,
        )
        if done.returncode != 0 or "registered successfully" not in done.stdout:
            raise FedkdError(
                f"flwr supernode register {public_key} failed: {(done.stdout + done.stderr).strip()[-300:]}"
            )

    def add_supernode(
        self, partition_id: int, private_key: Path | None = None, name: str | None = None, plaintext: bool = False,
    ) -> subprocess.Popen:
        """Start one ``flower-supernode`` for ``partition_id``, signing with ``private_key`` if given;
        over TLS when the deployment has it, unless ``plaintext`` (to show a TLS SuperLink refuses it)."""
        secure = ["--root-certificates", str(self.tls.ca_cert)] if self.tls and not plaintext else ["--insecure"]
        if private_key is not None:
            secure += ["--auth-supernode-private-key", str(private_key)]
        return self._start(
            name or f"supernode{partition_id}",
            [
                "flower-supernode", *secure, "--superlink", f"127.0.0.1:{self.port}", "--port", str(free_port()),
                "--node-config", f"partition-id={partition_id} num-partitions={self.nodes}",
            ],
        )

    def supernodes(self) -> list[dict]:
        """The SuperLink's SuperNodes (``flwr supernode list --format json``): ids and status."""
        import json

        done = subprocess.run(
            [str(self.bin / "flwr"), "supernode", "list", CONNECTION, "--format", "json"],
            env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=120,
        )
        try:
            data = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise FedkdError(
                f"flwr supernode list gave no JSON: {(done.stdout + done.stderr).strip()[-300:]}"
            ) from None
        return list(data.get("nodes", data) if isinstance(data, dict) else data)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every started process and its children, SIGKILL what is left after ``grace`` seconds."""
        pids = []
        for process in self.processes:
            pids += _children(process.pid) + [process.pid]
        _signal(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _signal([p for p in pids if Path(f"/proc/{p}").exists()], signal.SIGKILL)
        for process in self.processes:
            process.wait()
            process.log_file.close()  # type: ignore[attr-defined]
        self.processes.clear()

    def __enter__(self) -> LoopbackDeployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ the run
    def run(self, overrides: str, out_dir: str | Path, timeout: float = 600.0) -> RunOutput:
        """``flwr run <app> loopback --stream`` with ``overrides`` (Hydra, space separated) and ``out-dir``.

        ``num_clients`` defaults to the number of SuperNodes.
        """
        if "num_clients=" not in overrides:
            overrides = f"{overrides} num_clients={self.nodes}".strip()
        quote = "'" if '"' in overrides else '"'  # Flower parses k="v" or k='v', without escapes
        run_config = f'overrides={quote}{overrides}{quote} out-dir="{Path(out_dir).resolve()}"'
        command = [str(self.bin / "flwr"), "run", str(self.app_dir), CONNECTION, "--run-config", run_config, "--stream"]
        if self.simulation:
            command += ["--federation-config", f"num-supernodes={self.nodes} client-resources-num-cpus=1"]
        try:
            done = subprocess.run(
                command, env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            raise FedkdError(f"flwr run did not finish within {timeout:.0f}s; last output: {out[-500:]!r}") from None
        return RunOutput(done.returncode, done.stdout + done.stderr)

    def logs(self) -> str:
        """The SuperLink's and SuperNodes' logs (for failure messages)."""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.workdir.glob("*.log")))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, help="SuperNodes, one per partition (num_clients)")
    parser.add_argument("--overrides", default="rounds=2",
                        help='Hydra overrides of conf/sim.yaml, e.g. "rounds=5 strategy=fedprox"')
    parser.add_argument("--out", default="outputs/loopback", help="run output folder")
    parser.add_argument("--workdir", default=None, help="logs and FLWR_HOME (default: <out>/deployment)")
    parser.add_argument("--simulation", action="store_true", help="SuperLink in simulation mode (virtual SuperNodes)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    workdir = Path(args.workdir) if args.workdir else out / "deployment"
    with LoopbackDeployment(args.nodes, workdir, simulation=args.simulation) as deployment:
        kind = "virtual SuperNodes (simulation runtime)" if args.simulation else "SuperNodes"
        print(f"SuperLink on 127.0.0.1:{deployment.port}, {args.nodes} {kind}; logs in {workdir}", flush=True)
        result = deployment.run(args.overrides, out)
    print(result.output)
    ok = (out / "summary.json").is_file()
    print(f"{'finished' if ok else 'FAILED'}: outputs in {out}" + ("" if ok else f"; logs in {workdir}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

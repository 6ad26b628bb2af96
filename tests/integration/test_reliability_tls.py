"""The loopback deployment with TLS (certificates made here) and Flower's SuperNode authentication."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from fedkd.federated.certs import make_node_key, make_tls_files
from fedkd.federated.loopback import LoopbackDeployment
from fedkd.utils.run_logger import read_metrics


def _online(deployment: LoopbackDeployment, count: int, timeout: float = 90.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = [n for n in deployment.supernodes() if n.get("status") == "online"]
        if len(nodes) >= count or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


def test_certificates_name_the_host_and_chain_to_the_ca(tmp_path):
    tls = make_tls_files(tmp_path)
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    assert oct(tls.server_key.stat().st_mode & 0o777) == "0o600"
    private, public = make_node_key(tmp_path / "keys" / "node0")
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert b"OPENSSH PRIVATE KEY" in private.read_bytes()


def test_supernodes_without_an_authorised_key_or_without_tls_are_refused(tmp_path):
    tls = make_tls_files(tmp_path / "certs")
    node, _ = make_node_key(tmp_path / "keys" / "node0")
    stranger, _ = make_node_key(tmp_path / "keys" / "stranger")  # never registered
    with LoopbackDeployment(1, tmp_path / "deployment", tls=tls, node_keys=[node]) as deployment:
        online = _online(deployment, 1)
        assert len(online) == 1, deployment.logs()
        intruders = {
            "unregistered key": (deployment.add_supernode(1, stranger, name="unregistered"),
                                 "Failed to activate SuperNode"),
            "no key": (deployment.add_supernode(1, None, name="nokey"), "All SuperNodes must be registered"),
        }
        # Plaintext to the TLS port: the handshake fails, the SuperNode keeps retrying, never joins.
        plaintext = deployment.add_supernode(1, None, name="plaintext", plaintext=True)
        for name, (process, reason) in intruders.items():
            try:
                process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name}: the SuperNode was not refused within 90 s\n{deployment.logs()}")
            assert process.returncode != 0, name
            log = {"unregistered key": "unregistered", "no key": "nokey"}[name]
            assert reason in (tmp_path / "deployment" / f"{log}.log").read_text(), name
        time.sleep(3)
        assert "Connection attempt failed" in (tmp_path / "deployment" / "plaintext.log").read_text()
        assert plaintext.poll() is None or plaintext.returncode != 0
        nodes = deployment.supernodes()
    assert [n["node-id"] for n in nodes] == [online[0]["node-id"]], "only the authorised SuperNode is known"


@pytest.mark.slow
def test_loopback_run_over_tls_with_authenticated_supernodes(tmp_path):
    tls = make_tls_files(tmp_path / "certs")
    keys = [make_node_key(tmp_path / "keys" / f"node{i}")[0] for i in range(2)]
    out = tmp_path / "run"
    with LoopbackDeployment(2, tmp_path / "deployment", tls=tls, node_keys=keys) as deployment:
        result = deployment.run("dataset=digits rounds=1 model=lenet5_half", out, timeout=400)
        logs = deployment.logs()
    assert (out / "summary.json").is_file(), result.output[-3000:] + logs[-3000:]
    assert [r["step"] for r in read_metrics(out)] == [1]
    assert json.loads((out / "summary.json").read_text())["rounds_completed"] == 1
    config = (tmp_path / "deployment" / "flwr-home" / "config.toml").read_text()
    assert "root-certificates" in config and "insecure" not in config
    assert "--insecure" not in Path(tmp_path / "deployment" / "superlink.log").read_text()

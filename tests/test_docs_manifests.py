"""The cluster material under docs/: Kubernetes manifests parse and hold together, Slurm scripts run.

No cluster is reachable from CI, so this checks what can be checked without one: every YAML
document parses and has the fields the API server would insist on, every volume mount names a
volume, host paths are absolute, the DaemonSet shares what clients need (socket directory,
pid and IPC namespaces), the fikit.toml inside the ConfigMap passes fikitd's own parser, and
the Slurm scripts pass ``bash -n`` (and shellcheck where installed) and print the right
environment when run with a stand-in for slurmd's.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "docs" / "k8s"
SLURM = REPO / "docs" / "slurm"
MANIFESTS = sorted(K8S.glob("*.yaml"))
SCRIPTS = sorted(SLURM.glob("*.sh"))
WORKLOADS = {"DaemonSet": ("spec", "template", "spec"), "Deployment": ("spec", "template", "spec"),
             "Pod": ("spec",), "Job": ("spec", "template", "spec")}


def _documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for n, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                yield f"{path.name}#{n}", doc


DOCS = list(_documents())


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: Any = doc
    for key in WORKLOADS[doc["kind"]]:
        spec = spec[key]
    assert isinstance(spec, dict)
    return spec


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCS if doc["kind"] == kind]


def test_there_is_material() -> None:
    assert (K8S / "fikitd-daemonset.yaml") in MANIFESTS
    assert {"Namespace", "ConfigMap", "DaemonSet", "Pod"} <= {doc["kind"] for _, doc in DOCS}
    assert (SLURM / "fikit-task-prolog.sh") in SCRIPTS and (SLURM / "fikit-prolog.sh") in SCRIPTS
    for doc in ("kubernetes.md", "slurm.md"):
        text = (REPO / "docs" / doc).read_text()
        assert "not run on a real" in text, f"{doc} must say what was not run"
        for name in {p.name for p in MANIFESTS + SCRIPTS}:
            if name in text:
                break
        else:
            raise AssertionError(f"{doc} names none of the files it documents")


@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_each_document_has_the_essentials(where: str, doc: dict[str, Any]) -> None:
    assert isinstance(doc, dict), where
    assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], where
    assert isinstance(doc.get("kind"), str) and doc["kind"][0].isupper(), where
    meta = doc.get("metadata")
    assert isinstance(meta, dict) and isinstance(meta.get("name"), str), where
    assert meta["name"] == meta["name"].lower() and len(meta["name"]) <= 63, where
    if doc["kind"] in ("ConfigMap", "Secret"):
        assert isinstance(doc.get("data"), dict) and all(isinstance(v, str) for v in doc["data"].values())
        return
    if doc["kind"] == "Namespace":
        return
    assert isinstance(doc.get("spec"), dict), where
    if doc["kind"] in WORKLOADS:
        _check_pod_spec(where, _pod_spec(doc))
    if doc["kind"] == "DaemonSet":
        assert doc["apiVersion"] == "apps/v1"
        wanted = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert wanted and all(labels.get(k) == v for k, v in wanted.items()), "selector must match template"


def _check_pod_spec(where: str, spec: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    assert len(volumes) == len(spec.get("volumes", [])), f"{where}: duplicate volume names"
    for vol in volumes.values():
        if "hostPath" in vol:
            path = vol["hostPath"]["path"]
            assert path.startswith("/") and ".." not in path.split("/"), f"{where}: hostPath {path}"
            assert vol["hostPath"].get("type") in (None, "", "Directory", "DirectoryOrCreate", "File",
                                                   "FileOrCreate", "Socket")
    containers = spec.get("initContainers", []) + spec["containers"]
    assert spec["containers"], where
    names = [c["name"] for c in containers]
    assert len(set(names)) == len(names), f"{where}: duplicate container names"
    used: set[str] = set()
    for c in containers:
        assert isinstance(c.get("image"), str) and ":" in c["image"], f"{where}/{c['name']}: pinned image"
        paths = [m["mountPath"] for m in c.get("volumeMounts", [])]
        assert len(set(paths)) == len(paths), f"{where}/{c['name']}: a path mounted twice"
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{where}/{c['name']}: mount of unknown volume {m['name']}"
            assert m["mountPath"].startswith("/")
            used.add(m["name"])
        for e in c.get("env", []):
            assert ("value" in e) != ("valueFrom" in e), f"{where}/{c['name']}: env {e['name']}"
    assert used == set(volumes), f"{where}: volumes never mounted: {set(volumes) - used}"


def _host_paths(spec: dict[str, Any]) -> dict[str, str]:
    """Mount path in the first container -> host path."""
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec.get("volumes", []) if "hostPath" in v}
    return {m["mountPath"]: volumes[m["name"]] for m in spec["containers"][0].get("volumeMounts", [])
            if m["name"] in volumes}


def test_daemonset_shares_what_clients_need() -> None:
    (ds,) = _by_kind("DaemonSet")
    spec = _pod_spec(ds)
    mounts = _host_paths(spec)
    assert mounts["/run/fikit"] == "/run/fikit" and mounts["/var/lib/fikit"] == "/var/lib/fikit"
    assert spec["hostPID"] is True and spec["hostIPC"] is True
    assert spec.get("runtimeClassName") == "nvidia"
    fikitd = spec["containers"][0]
    assert fikitd["securityContext"]["privileged"] is True
    assert "--config" in fikitd["command"]
    env = {e["name"]: e.get("value") for e in fikitd["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and "compute" in env["NVIDIA_DRIVER_CAPABILITIES"]
    assert "nvidia.com/gpu" not in str(fikitd.get("resources", {})), "fikitd must not take a GPU from pods"
    ns = {doc["metadata"]["name"] for doc in _by_kind("Namespace")}
    assert ds["metadata"]["namespace"] in ns


def test_daemonset_config_passes_fikitds_parser() -> None:
    from fikitd import config

    (ds,) = _by_kind("DaemonSet")
    mounted = {v["configMap"]["name"] for v in _pod_spec(ds)["volumes"] if "configMap" in v}
    (cm,) = [doc for doc in _by_kind("ConfigMap") if doc["metadata"]["name"] in mounted]
    cfg = config.parse(cm["data"]["fikit.toml"], "fikit-config/fikit.toml")
    assert str(cfg.paths.runtime_dir) == "/run/fikit" and str(cfg.paths.state_dir) == "/var/lib/fikit"
    assert cfg.mps.mode == "manage"
    metrics_port = cfg.metrics.address[1]
    ports = [p["containerPort"] for p in _pod_spec(ds)["containers"][0].get("ports", [])]
    assert metrics_port in ports


def test_example_pod_joins_the_nodes_fikit() -> None:
    (pod,) = _by_kind("Pod")
    spec = _pod_spec(pod)
    assert spec["hostPID"] is True and spec["hostIPC"] is True
    assert _host_paths(spec)["/run/fikit"] == "/run/fikit"
    c = spec["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    field = env["FIKIT_PRIO"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field.startswith("metadata.annotations['") and field.endswith("']")
    annotation = field[len("metadata.annotations['"):-2]
    assert pod["metadata"]["annotations"][annotation] in ("high", "normal", "low")
    preload = env["LD_PRELOAD"]["value"]
    lib_dir = str(Path(preload).parent)
    assert any(m["mountPath"] == lib_dir for m in c["volumeMounts"])
    copier = spec["initContainers"][0]
    assert any(m["mountPath"] == lib_dir or preload.endswith(Path(copier["command"][-1]).name)
               for m in copier["volumeMounts"])
    assert env["FIKIT_SOCKET"]["value"].startswith("/run/fikit/")
    assert env["CUDA_MPS_PIPE_DIRECTORY"]["value"] == "/run/fikit/mps"
    assert "/run/fikit/by-uuid/" in " ".join(c["command"])


def test_device_plugin_config_shares_without_its_own_mps() -> None:
    (cm,) = [doc for doc in _by_kind("ConfigMap") if "config.yaml" in doc.get("data", {})]
    plugin = yaml.safe_load(cm["data"]["config.yaml"])
    assert plugin["version"] == "v1"
    sharing = plugin["sharing"]
    assert "mps" not in sharing, "fikitd runs the node's MPS; the plugin must not start another"
    (res,) = sharing["timeSlicing"]["resources"]
    assert res["name"] == "nvidia.com/gpu" and res["replicas"] >= 2


# --- Slurm --------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_scripts_are_valid_shell(script: Path) -> None:
    assert script.read_text().startswith("#!/bin/bash\n")
    assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if shutil.which("shellcheck"):
        out = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout


@pytest.fixture
def node(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A stand-in node: a runtime dir with a listening socket, two domains, the library, a QOS map,
    and an ``scontrol`` that answers for job 42."""
    run = Path(f"/tmp/fk-slurm-{os.getpid()}")
    run.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(run / "fikitd.sock"))
    sock.listen()
    for n in (0, 1):
        (run / f"gpu{n}").mkdir()
        (run / f"gpu{n}" / "domain").write_bytes(b"\0" * 16)
    lib = tmp_path / "libfikit.so"
    lib.write_bytes(b"")
    qos = tmp_path / "qos.map"
    qos.write_text((SLURM / "slurm-qos.map").read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text('#!/bin/sh\n[ "$3" = 42 ] && echo "   Priority=1 Nice=0 Account=a QOS=scavenger"\n')
    scontrol.chmod(0o755)
    try:
        yield {"run": run, "lib": lib, "qos": qos, "bin": bin_dir}
    finally:
        sock.close()
        shutil.rmtree(run, ignore_errors=True)


def _task_prolog(node: dict[str, Path], **env: str) -> dict[str, str]:
    full = {"PATH": f"{node['bin']}:/usr/bin:/bin", "FIKIT_RUNTIME_DIR": str(node["run"]),
            "FIKIT_LIB": str(node["lib"]), "FIKIT_QOS_MAP": str(node["qos"]), **env}
    out = subprocess.run(["bash", str(SLURM / "fikit-task-prolog.sh")], env=full, capture_output=True,
                         text=True, timeout=10)
    # (a made-up LD_PRELOAD in the test's environment makes ld.so complain; nothing else may)
    noise = [line for line in out.stderr.splitlines() if "ld.so" not in line]
    assert out.returncode == 0 and not noise, out.stderr
    exports: dict[str, str] = {}
    for line in out.stdout.splitlines():
        assert line.startswith("export "), line
        name, _, value = line[len("export "):].partition("=")
        exports[name] = value
    return exports


def test_task_prolog_sets_priority_from_qos_and_domain_from_gpu(node: dict[str, Path]) -> None:
    got = _task_prolog(node, SLURM_JOB_ID="42", SLURM_STEP_GPUS="1,0", SLURM_JOB_QOS="interactive")
    assert got["FIKIT_PRIO"] == "low"  # scontrol's QOS wins over the environment's
    assert got["FIKIT_DOMAIN"] == f"{node['run']}/gpu1"
    assert got["LD_PRELOAD"] == str(node["lib"]) and got["FIKIT_SOCKET"] == f"{node['run']}/fikitd.sock"
    got = _task_prolog(node, SLURM_JOB_ID="7", SLURM_JOB_GPUS="0", SLURM_JOB_QOS="interactive",
                       LD_PRELOAD="/x/other.so")
    assert got["FIKIT_PRIO"] == "high" and got["FIKIT_DOMAIN"].endswith("/gpu0")
    assert got["LD_PRELOAD"] == f"{node['lib']}:/x/other.so"
    unlisted = _task_prolog(node, SLURM_JOB_ID="7", SLURM_JOB_GPUS="0", SLURM_JOB_QOS="debug")
    assert unlisted["FIKIT_PRIO"] == "normal"


def test_task_prolog_fails_open(node: dict[str, Path]) -> None:
    assert _task_prolog(node, SLURM_JOB_ID="7") == {}  # no GPU in the step
    assert _task_prolog(node, SLURM_JOB_ID="7", SLURM_JOB_GPUS="5") == {}  # no such domain
    assert _task_prolog(node, SLURM_JOB_ID="7", SLURM_JOB_GPUS="0", FIKIT_DISABLE="1") == {}
    (node["run"] / "fikitd.sock").unlink()
    assert _task_prolog(node, SLURM_JOB_ID="7", SLURM_JOB_GPUS="0") == {}  # no daemon

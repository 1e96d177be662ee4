"""deploy/kubernetes: every manifest parses, and the probes, ports, folders and grace period
agree with what the worker's settings make of the ConfigMap."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from comfyui_worker.settings import Settings, is_secret_name

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
# What serve's drain adds after COMFYUI_SHUTDOWN_GRACE before it exits (lh/supervisor.py).
REPORT_FLUSH = 5.0


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """Every document of every YAML file, keyed by kind/name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert isinstance(document, dict) and "kind" in document, path
            name = document.get("metadata", {}).get("name", path.stem)
            found[f"{document['kind']}/{name}"] = document
    return found


@pytest.fixture(scope="module")
def pod(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["Deployment/comfyui-worker"]["spec"]["template"]["spec"]
    return spec


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = (c for c in pod["containers"] if c["name"] == name)
    return found


@pytest.fixture(scope="module")
def settings(manifests: dict[str, dict[str, Any]]) -> Settings:
    """The worker's settings from its ConfigMap, as `serve` would read them."""
    data = manifests["ConfigMap/comfyui-worker"]["data"]
    assert all(isinstance(v, str) for v in data.values())  # env values must be strings
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith(("COMFYUI_", "LHC_"))]:
            env.delenv(key)
        for key, value in data.items():
            env.setenv(key, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def test_kustomization_lists_every_manifest(manifests: dict[str, dict[str, Any]]) -> None:
    kustomization = manifests["Kustomization/kustomization"]
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_probes_ask_the_port_and_paths_the_worker_serves(
    pod: dict[str, Any], settings: Settings
) -> None:
    worker = container(pod, "worker")
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert settings.worker_health_port != 0  # the probes need the health server
    assert settings.worker_health_host == "0.0.0.0"  # the kubelet comes from outside the pod
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = worker[probe]["httpGet"]
        assert get["path"] == path, probe
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert port == settings.worker_health_port, probe
        # A probe slower than the health server's own event-loop check (2 s) would fail first.
        assert worker[probe]["timeoutSeconds"] > 2, probe


def test_metrics_are_scraped_where_they_are_served(
    manifests: dict[str, dict[str, Any]], pod: dict[str, Any], settings: Settings
) -> None:
    template = manifests["Deployment/comfyui-worker"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(settings.worker_health_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    service = manifests["Service/comfyui-worker-metrics"]["spec"]
    assert service["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = service["ports"]
    assert port["port"] == settings.worker_health_port
    assert port["targetPort"] in {p["name"] for p in container(pod, "worker")["ports"]}


def test_shutdown_grace_fits_in_the_pods_termination_grace(
    pod: dict[str, Any], settings: Settings
) -> None:
    assert pod["terminationGracePeriodSeconds"] > settings.shutdown_grace + REPORT_FLUSH


def test_one_gpu_per_pod_and_scaled_by_replicas(
    manifests: dict[str, dict[str, Any]], pod: dict[str, Any], settings: Settings
) -> None:
    comfyui = container(pod, "comfyui")
    assert comfyui["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert comfyui["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container(pod, "worker")["resources"].get("limits", {})
    deployment = manifests["Deployment/comfyui-worker"]["spec"]
    assert deployment["replicas"] >= 1
    assert deployment["strategy"]["rollingUpdate"]["maxSurge"] == 0  # no GPU to surge onto
    assert settings.max_in_flight >= 1


def test_worker_sees_comfyuis_folders_at_the_paths_it_is_told(
    pod: dict[str, Any], settings: Settings
) -> None:
    comfyui_port = container(pod, "comfyui")["ports"][0]["containerPort"]
    assert settings.base_url_str == f"http://127.0.0.1:{comfyui_port}"  # same pod
    mounts = {
        name: {
            m["name"]: PurePosixPath(m["mountPath"]) for m in container(pod, name)["volumeMounts"]
        }
        for name in ("comfyui", "worker")
    }
    shared = mounts["worker"]["comfyui-data"]
    assert mounts["comfyui"]["comfyui-data"] == shared
    for folder in (settings.output_dir, settings.temp_dir, settings.input_dir):
        assert PurePosixPath(folder).is_relative_to(shared)
    args = container(pod, "comfyui")["env"][0]["value"].split()
    flags = dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--output-directory"] == str(settings.output_dir)
    assert flags["--input-directory"] == str(settings.input_dir)
    assert str(PurePosixPath(flags["--temp-directory"]) / "temp") == str(settings.temp_dir)
    assert {v["name"] for v in pod["volumes"]} >= {"comfyui-data"}


def test_credentials_come_from_a_secret_not_the_configmap(
    manifests: dict[str, dict[str, Any]], pod: dict[str, Any]
) -> None:
    assert not [k for k in manifests["ConfigMap/comfyui-worker"]["data"] if is_secret_name(k)]
    secrets = [e for e in container(pod, "worker").get("env", []) if is_secret_name(e["name"])]
    assert secrets and all("secretKeyRef" in e["valueFrom"] for e in secrets)

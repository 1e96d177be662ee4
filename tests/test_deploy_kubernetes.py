"""deploy/kubernetes: every manifest is valid Kubernetes (the API's schema, strict, offline),
the pod meets the "restricted" Pod Security Standard, ComfyUI outlives the worker's drain, and
the probes, ports, folders, volumes, secrets and grace period agree with what the worker's
settings make of the ConfigMap."""

from __future__ import annotations

import copy
import os
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor

from comfyui_worker.constants import CleanupMode, OutputMode
from comfyui_worker.execution import ABANDON_TIMEOUT
from comfyui_worker.lh.supervisor import REPORT_FLUSH
from comfyui_worker.settings import Settings, is_secret_name

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
# Files kept beside the manifests but never applied (placeholders for secrets).
EXAMPLE_SUFFIX = ".example.yaml"
# Native sidecar containers are on by default from 1.29 (GA in 1.33); the newest schema
# bundled with the validator catches fields removed since.
KUBERNETES_VERSIONS = ("1.29", major_minor(latest_version()))
# What ComfyUI gets, at least, between the worker's exit and the end of the grace period.
COMFYUI_STOP = 5.0
# The volume types the restricted profile allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
QUANTITY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6}


@pytest.fixture(scope="module")
def documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of every YAML file, with the file it is in."""
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert isinstance(document, dict) and "kind" in document, path
            found.append((path, document))
    return found


@pytest.fixture(scope="module")
def manifests(documents: list[tuple[Path, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every document keyed by kind/name."""
    found: dict[str, dict[str, Any]] = {}
    for path, document in documents:
        name = document.get("metadata", {}).get("name", path.stem)
        assert f"{document['kind']}/{name}" not in found, path
        found[f"{document['kind']}/{name}"] = document
    return found


@pytest.fixture(scope="module")
def pod(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["Deployment/comfyui-worker"]["spec"]["template"]["spec"]
    return spec


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers (sidecars among them) and main containers."""
    return [*pod.get("initContainers", []), *pod["containers"]]


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = (c for c in containers(pod) if c["name"] == name)
    return found


def env_value(c: dict[str, Any], name: str) -> str:
    (value,) = (e["value"] for e in c["env"] if e["name"] == name)
    assert isinstance(value, str)
    return value


def comfyui_flags(pod: dict[str, Any]) -> dict[str, str]:
    args = env_value(container(pod, "comfyui"), "CLI_ARGS").split()
    return dict(zip(args[::2], args[1::2], strict=True))


def security(pod: dict[str, Any], c: dict[str, Any], key: str) -> Any:
    """A container's security setting, or the pod's where the container sets none."""
    own = c.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


def mounts(c: dict[str, Any]) -> dict[PurePosixPath, dict[str, Any]]:
    return {PurePosixPath(m["mountPath"]): m for m in c.get("volumeMounts", [])}


def writable_emptydir(pod: dict[str, Any], c: dict[str, Any], path: PurePosixPath) -> Any:
    """The emptyDir volume mounted writable at `path` in `c`, or None."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = mounts(c).get(path)
    if mount is None or mount.get("readOnly") or "emptyDir" not in volumes[mount["name"]]:
        return None
    return volumes[mount["name"]]["emptyDir"]


def quantity(text: str) -> int:
    """Bytes in a Kubernetes quantity such as 1Gi or 500M."""
    for unit, factor in QUANTITY_UNITS.items():
        if text.endswith(unit):
            return int(text.removesuffix(unit)) * factor
    return int(text)


@pytest.fixture(scope="module")
def settings(manifests: dict[str, dict[str, Any]]) -> Settings:
    """The worker's settings from its ConfigMap, as `serve` would read them."""
    data = manifests["ConfigMap/comfyui-worker"]["data"]
    assert all(isinstance(v, str) for v in data.values())  # env values must be strings
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in os.environ if k.startswith(("COMFYUI_", "LHC_", "AWS_"))]:
            env.delenv(key)
        for key, value in data.items():
            env.setenv(key, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


# --- the manifests as a whole -----------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_examples(
    manifests: dict[str, dict[str, Any]],
) -> None:
    kustomization = manifests["Kustomization/kustomization"]
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {name for name in files if name.endswith(EXAMPLE_SUFFIX)}
    assert examples  # the Secret's placeholders, which an apply would write over real ones
    assert set(kustomization["resources"]) == files - examples


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    documents: list[tuple[Path, dict[str, Any]]], version: str
) -> None:
    objects = [(p, d) for p, d in documents if d["kind"] != "Kustomization"]  # kustomize's own
    assert len(objects) == len(documents) - 1
    for path, document in objects:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{path.name}: {where}: {exc.message} (Kubernetes {version})")


def test_the_schema_check_refuses_what_the_api_server_would(
    manifests: dict[str, dict[str, Any]],
) -> None:
    """The validator is strict: a misspelt field fails, and so does a native sidecar on a
    version that has none."""
    deployment = manifests["Deployment/comfyui-worker"]
    misspelt = copy.deepcopy(deployment)
    worker = misspelt["spec"]["template"]["spec"]["containers"][0]
    worker["securityContxt"] = worker.pop("securityContext")
    with pytest.raises(kubernetes_validate.ValidationError, match="securityContxt"):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSIONS[0], strict=True)
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(deployment, "1.27", strict=True)


# --- security --------------------------------------------------------------------------------


def test_pod_meets_the_restricted_pod_security_standard(pod: dict[str, Any]) -> None:
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(flag), flag
    for volume in pod["volumes"]:
        (source,) = set(volume) - {"name"}
        assert source in RESTRICTED_VOLUMES, volume["name"]
    for c in containers(pod):
        name, own = c["name"], c.get("securityContext", {})
        assert own.get("allowPrivilegeEscalation") is False, name
        assert not own.get("privileged"), name
        assert "ALL" in own["capabilities"]["drop"], name
        assert set(own["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}, name
        assert security(pod, c, "runAsNonRoot") is True, name
        # The ComfyUI image's USER is root: runAsNonRoot alone would refuse to start it.
        assert security(pod, c, "runAsUser") not in (None, 0), name
        assert security(pod, c, "seccompProfile")["type"] in {"RuntimeDefault", "Localhost"}
        assert own.get("readOnlyRootFilesystem") is True, name
        assert not [p for p in c.get("ports", []) if "hostPort" in p], name


def test_what_each_container_writes_is_on_a_writable_volume(
    pod: dict[str, Any], settings: Settings
) -> None:
    worker, comfyui = container(pod, "worker"), container(pod, "comfyui")
    # run-comfyui-job's inputs wait in the temporary folder while they are uploaded.
    tmp = PurePosixPath(next((e["value"] for e in worker["env"] if e["name"] == "TMPDIR"), "/tmp"))
    scratch = writable_emptydir(pod, worker, tmp)
    assert scratch is not None
    if "sizeLimit" in scratch:  # over it, the kubelet evicts the pod at once
        assert quantity(scratch["sizeLimit"]) >= settings.max_in_flight * settings.max_input_bytes
    shared = PurePosixPath(settings.output_dir).parent
    if settings.cleanup is not CleanupMode.NONE:
        assert writable_emptydir(pod, worker, shared) is not None  # it removes files there
    # ComfyUI: its folders, HOME (the copy of ComfyUI, user installs, caches) and /tmp.
    home = PurePosixPath(env_value(comfyui, "HOME"))
    for path in (shared, home, PurePosixPath("/tmp")):
        assert writable_emptydir(pod, comfyui, path) is not None, path


def test_credentials_come_from_a_secret_not_the_configmap(
    manifests: dict[str, dict[str, Any]], pod: dict[str, Any]
) -> None:
    assert not [k for k in manifests["ConfigMap/comfyui-worker"]["data"] if is_secret_name(k)]
    secrets = [e for e in container(pod, "worker").get("env", []) if is_secret_name(e["name"])]
    assert secrets and all("secretKeyRef" in e["valueFrom"] for e in secrets)


# --- shutdown --------------------------------------------------------------------------------


def test_comfyui_is_a_native_sidecar_that_outlives_the_worker(
    pod: dict[str, Any], settings: Settings
) -> None:
    comfyui = container(pod, "comfyui")
    # Kubernetes stops sidecars only after the main containers have exited.
    assert comfyui in pod["initContainers"] and comfyui["restartPolicy"] == "Always"
    assert [c["name"] for c in pod["containers"]] == ["worker"]
    assert not [c for c in containers(pod) if "preStop" in c.get("lifecycle", {})]
    # The worker starts once ComfyUI answers (a sidecar's startupProbe gates what follows).
    assert comfyui["startupProbe"]["httpGet"]["path"] == "/system_stats"
    # ComfyUI goes away with the pod, so a prompt left running helps no retry (README).
    assert settings.interrupt_on_shutdown is True
    # The image's entrypoint runs as a child of a shell that passes SIGTERM on to it.
    assert comfyui["command"] == ["bash", "-c"]
    script = comfyui["args"][0].splitlines()
    assert "bash /runner-scripts/entrypoint.sh &" in script
    assert "trap 'kill -TERM $!' TERM" in script and script[-1] == "wait $!"


def test_termination_grace_covers_the_drain_and_then_comfyuis_stop(
    pod: dict[str, Any], settings: Settings
) -> None:
    interrupt = ABANDON_TIMEOUT if settings.interrupt_on_shutdown else 0.0
    worker_exits_by = settings.shutdown_grace + REPORT_FLUSH + interrupt
    assert pod["terminationGracePeriodSeconds"] > worker_exits_by
    assert pod["terminationGracePeriodSeconds"] - worker_exits_by >= COMFYUI_STOP
    # A probe's own grace would cut short the drain of a worker restarted by its liveness.
    for c in containers(pod):
        for probe in ("livenessProbe", "startupProbe"):
            assert "terminationGracePeriodSeconds" not in c.get(probe, {}), c["name"]


def test_disruption_budget_takes_one_pod_at_a_time(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment = manifests["Deployment/comfyui-worker"]["spec"]
    budget = manifests["PodDisruptionBudget/comfyui-worker"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    if "maxUnavailable" in budget:
        allowed = budget["maxUnavailable"]
    else:
        allowed = deployment["replicas"] - budget["minAvailable"]
    assert isinstance(allowed, int)
    # At least one, or a node drain never ends; fewer than all, or it stops every GPU.
    assert 1 <= allowed < deployment["replicas"]


# --- the worker and its ComfyUI --------------------------------------------------------------


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


def test_one_gpu_per_pod_on_gpu_nodes(
    manifests: dict[str, dict[str, Any]], pod: dict[str, Any], settings: Settings
) -> None:
    comfyui = container(pod, "comfyui")
    assert comfyui["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert comfyui["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container(pod, "worker")["resources"].get("limits", {})
    assert pod["nodeSelector"]
    assert [t for t in pod["tolerations"] if t["key"] == "nvidia.com/gpu"]
    deployment = manifests["Deployment/comfyui-worker"]["spec"]
    assert deployment["replicas"] >= 1
    assert deployment["strategy"]["rollingUpdate"]["maxSurge"] == 0  # no GPU to surge onto
    assert settings.max_in_flight >= 1


def test_worker_sees_comfyuis_folders_at_the_paths_it_is_told(
    pod: dict[str, Any], settings: Settings
) -> None:
    comfyui_port = container(pod, "comfyui")["ports"][0]["containerPort"]
    assert settings.base_url_str == f"http://127.0.0.1:{comfyui_port}"  # same pod
    worker_mounts = {m["name"]: m["mountPath"] for m in container(pod, "worker")["volumeMounts"]}
    comfyui_mounts = {m["name"]: m["mountPath"] for m in container(pod, "comfyui")["volumeMounts"]}
    shared = PurePosixPath(worker_mounts["comfyui-data"])
    assert PurePosixPath(comfyui_mounts["comfyui-data"]) == shared
    for folder in (settings.output_dir, settings.temp_dir, settings.input_dir):
        assert PurePosixPath(folder).is_relative_to(shared)
    flags = comfyui_flags(pod)
    assert flags["--output-directory"] == str(settings.output_dir)
    assert flags["--input-directory"] == str(settings.input_dir)
    assert str(PurePosixPath(flags["--temp-directory"]) / "temp") == str(settings.temp_dir)
    # serve refuses to start unless the folders it reads exist; ComfyUI makes some late.
    (mkdir,) = (
        line
        for line in container(pod, "comfyui")["args"][0].splitlines()
        if line.startswith("mkdir -p ")
    )
    created = set(shlex.split(mkdir)[2:])
    assert {str(getattr(settings, name)) for name in settings.mounted_dirs} <= created


def test_models_come_from_a_shared_claim_read_only(
    manifests: dict[str, dict[str, Any]], pod: dict[str, Any]
) -> None:
    comfyui = container(pod, "comfyui")
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = manifests["PersistentVolumeClaim/comfyui-models"]
    (models,) = (
        m
        for m in comfyui["volumeMounts"]
        if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName")
        == claim["metadata"]["name"]
    )
    assert models["readOnly"] is True
    # Every replica mounts it, on whichever node its GPU is.
    assert {"ReadWriteMany", "ReadOnlyMany"} & set(claim["spec"]["accessModes"])
    # ComfyUI is told about it by its own model paths file, from a ConfigMap.
    config = PurePosixPath(comfyui_flags(pod)["--extra-model-paths-config"])
    (mount,) = (
        m for m in comfyui["volumeMounts"] if config.parent == PurePosixPath(m["mountPath"])
    )
    source = volumes[mount["name"]]["configMap"]["name"]
    paths = yaml.safe_load(manifests[f"ConfigMap/{source}"]["data"][config.name])
    assert paths and {section["base_path"] for section in paths.values()} == {models["mountPath"]}


def test_outputs_go_to_a_store_with_keys_from_the_secret(
    manifests: dict[str, dict[str, Any]], pod: dict[str, Any], settings: Settings
) -> None:
    # A path inside this pod's emptyDir would mean nothing to the caller.
    assert settings.output_mode is OutputMode.STORE
    assert settings.output_store is not None and settings.output_store.startswith("s3://")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(pod, "worker")["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    required = {name for name, ref in refs.items() if not ref.get("optional")}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= required
    assert all(ref["key"] == name for name, ref in refs.items())
    # The example Secret has every key the pod reads, and placeholders only.
    (secret_name,) = {ref["name"] for ref in refs.values()}
    example = manifests[f"Secret/{secret_name}"]["stringData"]
    assert set(example) == set(refs)
    assert set(example.values()) == {"REPLACE_ME"}
    # So does the README's `kubectl create secret` line, the required keys at least.
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    command = re.search(rf"kubectl create secret generic {secret_name}((?: .*\\\n)*.*)", readme)
    assert command is not None
    literals = set(re.findall(r"--from-literal=([A-Z0-9_]+)=", command.group(1)))
    assert required <= literals <= set(refs)

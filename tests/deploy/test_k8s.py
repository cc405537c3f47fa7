"""The Kubernetes manifests, checked without a cluster: each kustomization (every overlay, every
component through an overlay) rendered by kustomize (the one built into kubectl, from the dev extra),
every rendered object validated against the Kubernetes OpenAPI schemas (kubernetes-validate's bundled
copies, strict: unknown fields fail), and the custom resources no standard schema covers (the RayJob,
KEDA's ScaledObject) against tests/deploy/schemas/ with their pod templates checked as Kubernetes pod
templates. Then the cross-references a schema cannot see, and the deployment defects of issue 22: an
RWX-only claim on the single-node path, a PDB that blocks drains, a GPU rollout that needs a spare GPU,
scaling a GPU pod on CPU, API keys outside a Secret, a build and an API that do not share storage."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from rsir.service.metrics import Metrics
from rsir.service.routes.ops import router as ops_router
from rsir.service.settings import Settings
from tests.conftest import REPO
from tests.deploy.support import (
    K8S,
    K8S_VERSIONS,
    SCHEMAS,
    Obj,
    kustomize,
    one,
    pod_specs,
    pod_templates,
    run,
    tool,
)

KUSTOMIZATIONS = {
    "base": K8S / "base",
    "gpu": K8S / "overlays" / "gpu",
    "single-node": K8S / "overlays" / "single-node",
    "archive": K8S / "overlays" / "archive",
    "ray": K8S / "ray",
}
# Components have no render of their own: each is rendered through an overlay above, and the one
# combination the docs give (an archive on a cluster without RWX) through an overlay made here.
COMBINED = {"archive-single-node": ["archive", "single-node"]}
CUSTOM_SCHEMAS = {
    ("ray.io/v1", "RayJob"): SCHEMAS / "rayjob-ray-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "scaledobject-keda-v1alpha1.json",
}
SETTINGS = {f"RSIR_{name.upper()}" for name in Settings.model_fields}
API_RENDERS = ["base", "gpu", "single-node", "archive", "archive-single-node"]
SINGLE_NODE = ["single-node", "archive-single-node"]


def combined_overlay(folder: Path, components: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = os.path.relpath(K8S / "base", folder)
    parts = ", ".join(os.path.relpath(K8S / "components" / c, folder) for c in components)
    folder.joinpath("kustomization.yaml").write_text(f"resources: [{base}]\ncomponents: [{parts}]\n")
    return folder


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    out = {name: kustomize(path) for name, path in KUSTOMIZATIONS.items()}
    for name, components in COMBINED.items():
        out[name] = kustomize(combined_overlay(tmp_path_factory.mktemp(name), components))
    return out


def test_every_overlay_and_component_is_rendered_here() -> None:
    overlays = {p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml")}
    assert overlays <= set(KUSTOMIZATIONS.values()), "an overlay the tests do not render"
    components = {p.parent.name for p in (K8S / "components").glob("*/kustomization.yaml")}
    used = {c for cs in COMBINED.values() for c in cs}
    for path in KUSTOMIZATIONS.values():
        text = (path / "kustomization.yaml").read_text()
        used |= {c for c in components if f"components/{c}" in text}
    assert components and components <= used, f"components rendered by no test: {components - used}"


def k8s_version(version: str) -> str:
    return kubernetes_validate.utils.latest_version() if version == "latest" else version


def validate_k8s(obj: Obj, version: str) -> None:
    try:
        kubernetes_validate.validate(obj, k8s_version(version), strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(map(str, exc.absolute_path))
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message}")


def validate_custom(obj: Obj, version: str) -> None:
    """A custom resource: its own schema, then each pod template as a core/v1 PodTemplate."""
    schema = json.loads(CUSTOM_SCHEMAS[(obj["apiVersion"], obj["kind"])].read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    for where, template in pod_templates(obj):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        try:
            kubernetes_validate.validate(wrapped, k8s_version(version), strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(map(str, exc.absolute_path))
            pytest.fail(f"{where} pod template at {path}: {exc.message}")


# -- schemas ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted([*KUSTOMIZATIONS, *COMBINED]))
def test_every_rendered_object_matches_its_schema(
    rendered: dict[str, list[Obj]], name: str, version: str
) -> None:
    objs = rendered[name]
    assert objs
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_SCHEMAS:
            validate_custom(obj, version)
        else:
            validate_k8s(obj, version)


def test_the_expected_objects_are_rendered(rendered: dict[str, list[Obj]]) -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in rendered["base"])
    assert [k.rsplit("-", 1)[0] if k.startswith("ConfigMap/") else k for k in kinds] == [
        "ConfigMap/rsir-settings",
        "Deployment/redis",
        "Deployment/rsir-api",
        "HorizontalPodAutoscaler/rsir-api",
        "Job/rsir-index-build",
        "Namespace/rsir",
        "PersistentVolumeClaim/rsir-index",
        "PodDisruptionBudget/rsir-api",
        "Service/redis",
        "Service/rsir-api",
    ]
    assert sorted(o["kind"] for o in rendered["ray"]) == ["Namespace", "RayJob"]
    gpu = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in rendered["gpu"])
    assert "HorizontalPodAutoscaler/rsir-api" not in gpu and "ScaledObject/rsir-api" in gpu
    for name, objs in rendered.items():
        for obj in objs:
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == "rsir", f"{name}: {obj['metadata']['name']}"


def test_the_schema_checks_catch_mistakes(rendered: dict[str, list[Obj]]) -> None:
    """What the checks above would report: a misspelt field, a wrongly typed one, in both kinds of
    schema (strict Kubernetes, and the RayJob's)."""
    api = copy.deepcopy(one(rendered["base"], "Deployment", "rsir-api"))
    container = api["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(api, k8s_version("latest"), strict=True)

    schema = json.loads(CUSTOM_SCHEMAS[("ray.io/v1", "RayJob")].read_text())
    job = copy.deepcopy(one(rendered["ray"], "RayJob"))
    job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be "0"
    job["spec"]["shutdownAfterJobFinish"] = True  # misspelt
    messages = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(job)]
    assert any("not of type 'string'" in m for m in messages), messages
    assert any("shutdownAfterJobFinish" in m for m in messages), messages

    job = copy.deepcopy(one(rendered["ray"], "RayJob"))
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    worker["resources"]["limit"] = worker["resources"].pop("limits")
    with pytest.raises(pytest.fail.Exception, match="limit"):
        validate_custom(job, "latest")

    schema = json.loads(CUSTOM_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")].read_text())
    scaled = copy.deepcopy(one(rendered["gpu"], "ScaledObject"))
    scaled["spec"]["minReplicas"] = scaled["spec"].pop("minReplicaCount")  # the HPA's name, not KEDA's
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 16  # must be a string
    messages = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(scaled)]
    assert any("minReplicas" in m for m in messages), messages
    assert any("not of type 'string'" in m for m in messages), messages


# -- the API ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", API_RENDERS)
def test_api_probes_hit_readyz_and_healthz(rendered: dict[str, list[Obj]], name: str) -> None:
    spec = one(rendered[name], "Deployment", "rsir-api")["spec"]["template"]["spec"]
    (api,) = spec["containers"]
    routes = {getattr(r, "path", None) for r in ops_router.routes}
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    probes = {kind: api[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["path"] in routes, f"{probe['path']} is not a route of the service"
        assert probe["port"] in ports
    assert ports["http"] == 8000, "rsir serve --port 8000 (the image's command)"


def test_the_service_hpa_and_pdb_point_at_the_api(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["base"]
    api = one(objs, "Deployment", "rsir-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    service = one(objs, "Service", "rsir-api")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for c in api["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    hpa = one(objs, "HorizontalPodAutoscaler", "rsir-api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "rsir-api")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = one(objs, "PodDisruptionBudget", "rsir-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_container_sets_requests_and_limits(rendered: dict[str, list[Obj]], name: str) -> None:
    for pod in pod_specs(rendered[name]):
        for c in pod.containers():
            resources = c.get("resources", {})
            for key in ("cpu", "memory"):
                assert key in resources.get("requests", {}), f"{pod.where} {c['name']}: no {key} request"
            assert "memory" in resources.get("limits", {}), f"{pod.where} {c['name']}: no memory limit"


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_pods_run_as_non_root(rendered: dict[str, list[Obj]], name: str) -> None:
    for pod in pod_specs(rendered[name]):
        context = pod.spec.get("securityContext", {})
        assert context.get("runAsNonRoot") is True and context.get("runAsUser", 0) != 0, pod.where
        for c in pod.containers():
            escalation = c.get("securityContext", {}).get("allowPrivilegeEscalation")
            assert escalation is False, f"{pod.where} {c['name']}"


@pytest.mark.parametrize("name", sorted([*KUSTOMIZATIONS, *COMBINED]))
def test_references_resolve(rendered: dict[str, list[Obj]], name: str) -> None:
    """ConfigMaps, PVCs and Services that pods and Services name exist in the same render."""
    objs = rendered[name]
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    if name == "ray":  # the RayJob uses the claims the archive overlay creates (one shared flow)
        names |= {(o["kind"], o["metadata"]["name"]) for o in rendered["archive"]}
    for pod in pod_specs(objs):
        for c in pod.containers():
            for source in c.get("envFrom", []):
                if "secretRef" in source:  # created by the operator (docs/deploy.md), so optional
                    assert source["secretRef"].get("optional") is True, pod.where
                    continue
                assert ("ConfigMap", source["configMapRef"]["name"]) in names, pod.where
        for volume in pod.spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
    pods = pod_specs(objs)
    for service in (o for o in objs if o["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        assert any(selector <= p.labels.items() for p in pods), f"Service {service['metadata']['name']}"


# -- settings, Redis, the index volume --------------------------------------------------------------
@pytest.mark.parametrize("name", API_RENDERS)
def test_settings_are_real_settings(rendered: dict[str, list[Obj]], name: str) -> None:
    data: dict[str, str] = one(rendered[name], "ConfigMap")["data"]
    unknown = {k for k in data if k.startswith("RSIR_")} - SETTINGS
    assert not unknown, f"rsir-settings sets {unknown}, which service/settings.py does not read"
    redis = one(rendered[name], "Service", "redis")
    assert data["RSIR_REDIS_URL"] == f"redis://redis:{redis['spec']['ports'][0]['port']}/0"
    Settings.model_validate({k[len("RSIR_") :].lower(): v for k, v in data.items() if k.startswith("RSIR_")})


def test_redis_has_probes_and_stays_a_cache(rendered: dict[str, list[Obj]]) -> None:
    (redis,) = one(rendered["base"], "Deployment", "redis")["spec"]["template"]["spec"]["containers"]
    assert redis["image"].startswith("redis:7")
    for probe in ("readinessProbe", "livenessProbe"):
        assert redis[probe]["exec"]["command"] == ["redis-cli", "ping"]
    assert "--maxmemory" in redis["args"]


def test_the_job_builds_the_index_the_api_reads(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["base"]
    settings = one(objs, "ConfigMap")["data"]
    job = one(objs, "Job", "rsir-index-build")["spec"]["template"]["spec"]
    api = one(objs, "Deployment", "rsir-api")["spec"]["template"]["spec"]
    (build,) = job["containers"]
    assert build["command"] == ["rsir-demo-index"]
    env = {e["name"]: e["value"] for e in build["env"]}
    assert settings["RSIR_INDEX"] == f"{env['INDEX_ROOT']}/demo"  # docker/demo-index.sh: $root/demo
    assert settings["RSIR_ARCHIVE_ROOT"] == f"{env['INDEX_ROOT']}/demo-synth"  # and its archive

    def index_mount(spec: Obj, container: Obj) -> tuple[str, bool]:
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        (mount,) = [m for m in container["volumeMounts"] if claims.get(m["name"]) == "rsir-index"]
        return mount["mountPath"], bool(mount.get("readOnly", False))

    assert index_mount(job, build) == (env["INDEX_ROOT"], False)
    (serve,) = api["containers"]
    assert index_mount(api, serve) == (env["INDEX_ROOT"], True)
    (wait,) = api["initContainers"]
    assert "CURRENT" in " ".join(wait["command"]), "API pods start once the index is published"
    assert job.get("restartPolicy") in ("Never", "OnFailure")


# -- the GPU overlay --------------------------------------------------------------------------------
def test_gpu_overlay_puts_api_and_job_on_a_gpu(rendered: dict[str, list[Obj]]) -> None:
    for kind, name in (("Deployment", "rsir-api"), ("Job", "rsir-index-build")):
        spec = one(rendered["gpu"], kind, name)["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
        assert container["image"] == "rsir:gpu"
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert container["resources"]["limits"]["cpu"], "the base's limits are kept (merged, not replaced)"
        base = one(rendered["base"], kind, name)["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in base["containers"][0]["resources"]["limits"]
        assert base["containers"][0]["image"] == "rsir:cpu"
    assert one(rendered["gpu"], "ConfigMap")["data"]["RSIR_DEVICE"] == "cuda"
    assert one(rendered["base"], "ConfigMap")["data"]["RSIR_DEVICE"] == "cpu"
    build = one(rendered["gpu"], "Job")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "BUILD_ARGS", "value": "--device cuda"} in build["env"]


@pytest.mark.parametrize(("overlay", "tag"), [("base", "cpu"), ("overlays/gpu", "gpu")])
def test_a_registry_overlay_renames_every_rsir_image(tmp_path: Path, overlay: str, tag: str) -> None:
    """The README's way to pull from a registry: an overlay with ``images: [{name: rsir, newName: ...}]``
    on top of the base or the GPU overlay keeps each image's tag."""
    mine = tmp_path / "prod"
    mine.mkdir()
    base = os.path.relpath(K8S / overlay, mine)
    mine.joinpath("kustomization.yaml").write_text(
        f"resources: [{base}]\nimages: [{{name: rsir, newName: registry.example.com/rsir}}]\n"
    )
    images = {c["image"] for pod in pod_specs(kustomize(mine)) for c in pod.containers()}
    assert images == {"redis:7-alpine", f"registry.example.com/rsir:{tag}"}


# -- the Ray build ----------------------------------------------------------------------------------
def test_rayjob_runs_the_ray_build_on_gpu_workers(rendered: dict[str, list[Obj]]) -> None:
    job: dict[str, Any] = one(rendered["ray"], "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["rsir", "build-index"]
    assert argv[argv.index("--engine") + 1] == "ray"
    cluster = job["spec"]["rayClusterSpec"]
    workers = cluster["workerGroupSpecs"]
    assert int(argv[argv.index("--ray-actors") + 1]) == sum(g["replicas"] for g in workers)
    for group in workers:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (worker,) = group["template"]["spec"]["containers"]
        assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) == 1
    archive, out = argv[argv.index("--archive") + 1], argv[argv.index("--out") + 1]
    for where, template in pod_templates(job):
        (container,) = template["spec"]["containers"]
        assert container["image"] == "rsir:gpu-ray", "the image with the ray extra"
        assert claim_mounts(template["spec"], container) == {
            "rsir-index": ("/index", False),
            "rsir-archive": ("/archive", True),
        }, where
        assert out.startswith("/index/") and archive == "/archive"
        # KubeRay keeps probes a container sets; its own default ones exec `wget` (not in the image).
        for probe in ("readinessProbe", "livenessProbe"):
            assert "httpGet" in container[probe] and "exec" not in container[probe], where
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def claim_mounts(spec: Obj, container: Obj) -> dict[str, tuple[str, bool]]:
    """``{claim name: (mount path, read-only)}`` of a container's PVC mounts."""
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    return {
        claims[m["name"]]: (m["mountPath"], bool(m.get("readOnly", False)))
        for m in container.get("volumeMounts", [])
        if m["name"] in claims
    }


def min_replicas(objs: list[Obj]) -> int:
    """The fewest API replicas the render can run at: the autoscaler's floor, else the Deployment's."""
    for obj in objs:
        if obj["kind"] == "HorizontalPodAutoscaler":
            return int(obj["spec"].get("minReplicas", 1))
        if obj["kind"] == "ScaledObject":
            return int(obj["spec"].get("minReplicaCount", 0))
    return int(one(objs, "Deployment", "rsir-api")["spec"].get("replicas", 1))


# -- issue 22: storage paths, drains, rollouts, scaling, secrets, one build -> serve flow ------------
@pytest.mark.parametrize("name", SINGLE_NODE)
def test_the_single_node_path_claims_nothing_rwx_and_runs_one_replica(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    objs = rendered[name]
    claims = [o for o in objs if o["kind"] == "PersistentVolumeClaim"]
    assert claims
    for claim in claims:
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], claim["metadata"]["name"]
    api = one(objs, "Deployment", "rsir-api")["spec"]
    assert api["replicas"] == 1 and api["strategy"] == {"type": "Recreate"}
    assert not [o for o in objs if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]


@pytest.mark.parametrize("name", ["base", "gpu", "archive"])
def test_the_multi_replica_path_claims_rwx(rendered: dict[str, list[Obj]], name: str) -> None:
    for claim in (o for o in rendered[name] if o["kind"] == "PersistentVolumeClaim"):
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"], claim["metadata"]["name"]


@pytest.mark.parametrize("name", API_RENDERS)
def test_the_pdb_lets_a_drain_evict_one_api_pod(rendered: dict[str, list[Obj]], name: str) -> None:
    objs = rendered[name]
    pdb = one(objs, "PodDisruptionBudget", "rsir-api")["spec"]
    floor = min_replicas(objs)
    if "maxUnavailable" in pdb:
        assert int(pdb["maxUnavailable"]) >= 1
    else:
        assert floor - int(pdb["minAvailable"]) >= 1, f"minAvailable {pdb['minAvailable']} of {floor}"


def test_the_pdb_check_catches_the_old_gpu_budget(rendered: dict[str, list[Obj]]) -> None:
    """The defect the check above is for: minAvailable 1 with one GPU replica blocks every drain."""
    objs = copy.deepcopy(rendered["gpu"])
    one(objs, "PodDisruptionBudget", "rsir-api")["spec"] = {"minAvailable": 1, "selector": {}}
    with pytest.raises(AssertionError, match="minAvailable 1 of 1"):
        test_the_pdb_lets_a_drain_evict_one_api_pod({"gpu": objs}, "gpu")


def test_gpu_api_scales_on_saturation_and_rolls_out_without_a_spare_gpu(
    rendered: dict[str, list[Obj]],
) -> None:
    objs = rendered["gpu"]
    scaled = one(objs, "ScaledObject", "rsir-api")["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rsir-api"}
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    exposed = exposed_series()
    queries = [t["metadata"]["query"] for t in scaled["triggers"]]
    assert all(t["type"] == "prometheus" for t in scaled["triggers"])
    named = {m for q in queries for m in re.findall(r"\b(rsir_[a-z_]+)", q)}
    assert named and named <= exposed, f"queries name metrics /metrics does not expose: {named - exposed}"
    assert "rsir_inflight_searches" in named and "rsir_stage_seconds_bucket" in named
    assert not any("cpu" in q for q in queries)
    strategy = one(objs, "Deployment", "rsir-api")["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def exposed_series() -> set[str]:
    """The series names the service's /metrics exposes (a labelled family has no sample until used)."""
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "counter": ("_total",)}
    return {f.name + s for f in Metrics().registry.collect() for s in suffixes.get(f.type, ("",))}


@pytest.mark.parametrize("name", API_RENDERS)
def test_api_keys_come_from_a_secret_never_the_configmap(rendered: dict[str, list[Obj]], name: str) -> None:
    objs = rendered[name]
    assert "RSIR_API_KEYS" not in one(objs, "ConfigMap")["data"]
    (api,) = one(objs, "Deployment", "rsir-api")["spec"]["template"]["spec"]["containers"]
    secrets = [s["secretRef"]["name"] for s in api["envFrom"] if "secretRef" in s]
    assert secrets == ["rsir-api-keys"]
    docs = (REPO / "docs" / "deploy.md").read_text()
    assert "kubectl -n rsir create secret generic rsir-api-keys --from-literal=RSIR_API_KEYS=" in docs


@pytest.mark.parametrize("name", ["archive", "archive-single-node"])
def test_the_build_and_the_api_share_one_archive_and_one_index(
    rendered: dict[str, list[Obj]], name: str
) -> None:
    """The Job and the RayJob write where the API reads; the API resolves originals where the builders
    read them (sources.json holds paths relative to the archive root: RSIR_ARCHIVE_ROOT)."""
    objs = rendered[name]
    settings = one(objs, "ConfigMap")["data"]
    api_spec = one(objs, "Deployment", "rsir-api")["spec"]["template"]["spec"]
    (api,) = api_spec["containers"]
    assert claim_mounts(api_spec, api) == {"rsir-index": ("/index", True), "rsir-archive": ("/archive", True)}
    assert settings["RSIR_ARCHIVE_ROOT"] == "/archive" and settings["RSIR_INDEX"] == "/index/archive"

    job = one(objs, "Job", "rsir-index-build")["spec"]
    assert job["suspend"] is True, "one builder at a time: the Job waits until started (or Ray builds)"
    (build,) = job["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in build["env"]}
    assert build["command"] == ["rsir-index-archive"]
    assert (env["ARCHIVE_DIR"], env["INDEX_DIR"]) == (settings["RSIR_ARCHIVE_ROOT"], settings["RSIR_INDEX"])
    assert claim_mounts(job["template"]["spec"], build) == {
        "rsir-index": ("/index", False),
        "rsir-archive": ("/archive", True),
    }

    ray = one(rendered["ray"], "RayJob")
    argv = shlex.split(ray["spec"]["entrypoint"])
    assert argv[argv.index("--out") + 1] == settings["RSIR_INDEX"]
    assert argv[argv.index("--archive") + 1] == settings["RSIR_ARCHIVE_ROOT"]
    claims = {o["metadata"]["name"]: o for o in objs if o["kind"] == "PersistentVolumeClaim"}
    for _, template in pod_templates(ray):
        (container,) = template["spec"]["containers"]
        assert set(claim_mounts(template["spec"], container)) <= set(claims)


def test_the_image_has_the_archive_build_script() -> None:
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert "COPY docker/index-archive.sh /usr/local/bin/rsir-index-archive" in text
    done = run([tool("shellcheck"), "--shell=sh", str(REPO / "docker" / "index-archive.sh")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert (REPO / "docker" / "index-archive.sh").stat().st_mode & 0o111


def test_the_kuberay_version_is_pinned_in_one_place_the_docs_repeat() -> None:
    """KubeRay operators whose default probes exec `wget` fail with images without it: the version
    the manifests are written for is stated where they are applied and in the walkthrough."""
    text = (K8S / "ray" / "kustomization.yaml").read_text()
    (version,) = re.findall(r"kuberay/kuberay-operator --version (\d+\.\d+\.\d+)", text)
    docs = (REPO / "docs" / "deploy.md").read_text()
    assert f"helm install kuberay-operator kuberay/kuberay-operator --version {version}" in docs

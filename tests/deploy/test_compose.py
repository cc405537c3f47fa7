"""compose.yaml, checked without a Docker engine: the compose-spec JSON schema (check-jsonschema's vendored
copy of the official schema), then what the schema cannot see: which services each profile starts,
that every dependency is among them, the start order conditions, the GPU reservations, and that every
RSIR_* variable is a real setting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rsir.service.settings import Settings
from tests.conftest import REPO
from tests.deploy.support import run, tool

COMPOSE = REPO / "compose.yaml"
SETTINGS = {f"RSIR_{name.upper()}" for name in Settings.model_fields}


def load() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # resolves the anchors and << merges
    return doc


def dotenv() -> dict[str, str]:
    """The ``.env`` beside compose.yaml, which ``docker compose`` reads for COMPOSE_* variables."""
    pairs = [
        line.split("=", 1)
        for line in (REPO / ".env").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return {k.strip(): v.strip() for k, v in pairs}


def active(doc: dict[str, Any], profiles: set[str]) -> dict[str, dict[str, Any]]:
    """The services ``docker compose up`` starts with these profiles: those without ``profiles`` and
    those sharing one (the compose spec's rule)."""
    return {
        name: svc
        for name, svc in doc["services"].items()
        if not svc.get("profiles") or profiles & set(svc["profiles"])
    }


def default_profiles() -> set[str]:
    return {p.strip() for p in dotenv().get("COMPOSE_PROFILES", "").split(",") if p.strip()}


STACKS = {
    # `docker compose up` (COMPOSE_PROFILES from .env) and `docker compose --profile gpu up` (the flag
    # replaces COMPOSE_PROFILES)
    "default": (None, {"redis", "index-build", "api"}),
    "gpu": ({"gpu"}, {"redis", "index-build-gpu", "api-gpu"}),
}


def test_compose_file_matches_the_compose_spec_schema() -> None:
    done = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    text = COMPOSE.read_text().replace("service_completed_successfully", "service_finished", 1)
    broken.write_text(text.replace("    restart: unless-stopped", "    restrat: unless-stopped", 1))
    done = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)])
    assert done.returncode == 1
    assert "service_finished" in done.stdout and "restrat" in done.stdout


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_each_profile_starts_one_complete_stack(stack: str) -> None:
    doc = load()
    flag, expected = STACKS[stack]
    services = active(doc, flag if flag is not None else default_profiles())
    assert set(services) == expected
    for name, svc in services.items():
        missing = set(svc.get("depends_on", {})) - set(services)
        assert not missing, f"{name} depends on {missing}, which this profile does not start"
    ports = [p.split(":")[0] for svc in services.values() for p in svc.get("ports", [])]
    assert len(ports) == len(set(ports)), f"host ports published twice: {ports}"
    built = {svc["image"] for svc in services.values() if "build" in svc}
    for name, svc in services.items():
        image = svc["image"]
        assert "build" in svc or image in built or "/" in image or image.startswith("redis:"), (
            f"{name}'s image {image} is neither built by this stack nor a published image"
        )
    for svc in services.values():
        for volume in svc.get("volumes", []):
            assert volume.split(":")[0] in doc["volumes"], f"undeclared volume {volume}"


def test_the_default_profile_comes_from_dotenv() -> None:
    assert default_profiles() == {"cpu"}


@pytest.mark.parametrize(("api", "builder"), [("api", "index-build"), ("api-gpu", "index-build-gpu")])
def test_api_waits_for_redis_and_the_index_build(api: str, builder: str) -> None:
    services = load()["services"]
    assert services[api]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        builder: {"condition": "service_completed_successfully"},
    }
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services[api]["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "rsir.service.healthcheck"]
    assert services[builder].get("restart") == "no", "a one-shot job"
    assert services[builder]["command"] == ["rsir-demo-index"]


@pytest.mark.parametrize(("api", "builder"), [("api", "index-build"), ("api-gpu", "index-build-gpu")])
def test_the_api_serves_the_index_the_job_builds(api: str, builder: str) -> None:
    services = load()["services"]
    env_api, env_build = services[api]["environment"], services[builder]["environment"]
    assert env_api["RSIR_INDEX"] == f"{env_build['INDEX_ROOT']}/demo"  # docker/demo-index.sh: $root/demo
    assert env_api["RSIR_REDIS_URL"] == "redis://redis:6379/0"
    assert env_api["RSIR_HOST"] == "0.0.0.0"
    assert "index:/index:ro" in services[api]["volumes"]
    assert "index:/index" in services[builder]["volumes"]
    # 8000 unless API_PORT says otherwise (make compose-check picks a free port on a shared machine)
    assert services[api]["ports"] == ["${API_PORT:-8000}:8000"]


def test_gpu_services_reserve_a_gpu_and_use_the_gpu_image() -> None:
    services = load()["services"]
    for name in ("api-gpu", "index-build-gpu"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
        assert services[name]["image"] == "rsir:gpu"
    assert services["index-build-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert services["api-gpu"]["environment"]["RSIR_DEVICE"] == "cuda"
    for name in ("api", "index-build", "redis"):
        assert "deploy" not in services[name]
    assert services["index-build"]["build"]["dockerfile"] == "docker/Dockerfile.cpu"


def test_rsir_variables_are_settings() -> None:
    for name, svc in load()["services"].items():
        env = svc.get("environment", {})
        unknown = {k for k in env if k.startswith("RSIR_")} - SETTINGS
        assert not unknown, f"{name} sets {unknown}, which service/settings.py does not read"


# -- secrets and your own archive (issue 22 items 5 and 10) -------------------------------------------
ARCHIVE_OVERRIDE = REPO / "compose.archive.yaml"


def test_api_keys_come_from_an_ignored_env_file_never_the_compose_file() -> None:
    services = load()["services"]
    for name in ("api", "api-gpu"):
        assert services[name]["env_file"] == [{"path": "./rsir.secrets.env", "required": False}]
    for name, svc in services.items():
        assert "RSIR_API_KEYS" not in svc.get("environment", {}), name
    assert "/rsir.secrets.env" in (REPO / ".gitignore").read_text().splitlines()
    assert "rsir.secrets.env" in (REPO / ".dockerignore").read_text().splitlines()
    example = (REPO / "rsir.secrets.env.example").read_text()
    line = next(x for x in example.splitlines() if x.startswith("RSIR_API_KEYS="))
    keys = Settings.model_validate({"api_keys": json.loads(line.split("=", 1)[1])}).api_keys
    assert keys and all(isinstance(v, int) for v in keys.values())


def test_the_archive_override_matches_the_compose_spec_schema() -> None:
    done = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(ARCHIVE_OVERRIDE)])
    assert done.returncode == 0, done.stdout + done.stderr


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge for the keys the override uses: mappings merge, ``volumes`` merge by target,
    anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if key == "environment":
            out[key] = {**base.get(key, {}), **value}
        elif key == "volumes":
            by_target = {v.split(":")[1]: v for v in base.get(key, [])}
            out[key] = list({**by_target, **{v.split(":")[1]: v for v in value}}.values())
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(("api", "builder"), [("api", "index-build"), ("api-gpu", "index-build-gpu")])
def test_the_archive_override_builds_the_users_folder_and_serves_it(api: str, builder: str) -> None:
    base = load()["services"]
    override = yaml.safe_load(ARCHIVE_OVERRIDE.read_text())["services"]
    assert set(override) <= set(base), "the override only changes services compose.yaml defines"
    build, serve = _merged(base[builder], override[builder]), _merged(base[api], override[api])
    mount = "${ARCHIVE:?set ARCHIVE to the folder of images to index}:/archive:ro"
    assert mount in build["volumes"] and mount in serve["volumes"]
    assert "index:/index" in build["volumes"] and "index:/index:ro" in serve["volumes"]
    assert build["command"] == ["rsir-index-archive"]  # docker/index-archive.sh in the images
    env_build, env_api = build["environment"], serve["environment"]
    assert env_api["RSIR_INDEX"] == env_build["INDEX_DIR"] == "/index/archive"
    assert env_api["RSIR_ARCHIVE_ROOT"] == env_build["ARCHIVE_DIR"] == "/archive"
    assert serve["depends_on"][builder] == {"condition": "service_completed_successfully"}
    unknown = {k for k in env_api if k.startswith("RSIR_")} - SETTINGS
    assert not unknown
    script = (REPO / "docker" / "index-archive.sh").read_text()
    assert 'archive="${ARCHIVE_DIR:-/archive}"' in script and 'index="${INDEX_DIR:-/index/archive}"' in script

"""Error bodies and public endpoints name ids and versions, never where things live on the server
(issue 21, item 7): each test scans the bodies for the paths the server really uses."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx

from rsir.index.versions import resolve_version
from rsir.model.encoders import ClipEncoder
from tests.service.conftest import ServerFactory, TinyIndex, assert_error


def _secrets(*paths: Path) -> list[str]:
    """Spellings of the paths a body must not contain (absolute, resolved, and their last parts)."""
    out = set()
    for path in paths:
        for p in (path, path.resolve()):
            out.add(str(p))
            out.add(str(p.parent))
    return sorted(out, key=len, reverse=True)


def assert_no_path(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked in {text[:400]!r}"
    for os_error in ("No such file", "Errno", "Traceback"):
        assert os_error not in text, text[:400]


def test_a_missing_original_is_a_server_error_without_path_or_os_error(
    serve: ServerFactory, tiny_index: TinyIndex, index_copy: Path, tmp_path: Path
):
    # A private archive, served through RSIR_ARCHIVE_ROOT, so one original can be removed after the
    # build. The file is the server's to keep (issue 21 item 8): a 500 naming the id, not a 404.
    archive = Path(shutil.copytree(tiny_index.archive, tmp_path / "archive"))
    gone = tiny_index.ids[5]
    (archive / gone).unlink()
    client = serve(index=index_copy, archive_root=archive).client()
    secrets = _secrets(archive / gone, index_copy)
    for suffix in ("", "/thumbnail", "/explain.png?query=boats"):
        response = client.get(f"/images/{gone}{suffix}")
        error = assert_error(response, 500, "original_unavailable")
        assert gone in error["message"]
        assert_no_path(response.text, secrets)
    assert client.get(f"/images/{tiny_index.ids[6]}").status_code == 200  # the others are served


def test_version_and_readyz_name_no_paths(
    serve: ServerFactory, index_copy: Path, tiny_encoder: ClipEncoder, tmp_path: Path
):
    server = serve(index=index_copy, index_poll_s=0.05)
    client = server.client()
    version = client.get("/version")
    assert version.status_code == 200
    body = version.json()
    assert "root" not in body["index"] and "checkpoint" not in body["model"]
    assert body["model"]["checkpoint_sha256"] == tiny_encoder.describe()["checkpoint_sha256"]
    assert_no_path(version.text, _secrets(index_copy))

    # A broken publish is reported by version and file, not by path.
    broken = index_copy / "v0042"
    shutil.copytree(resolve_version(index_copy), broken)
    (broken / "images.json").write_text('["only one id"]')
    (index_copy / "CURRENT").write_text("v0042\n")
    deadline = time.monotonic() + 10
    while (ready := client.get("/readyz").json())["index"]["last_switch_error"] is None:
        assert time.monotonic() < deadline, "the broken version was never noticed"
        time.sleep(0.05)
    assert ready["index"]["last_switch_error"].startswith("v0042/images.json: 1 entries")
    assert_no_path(json.dumps(ready), _secrets(index_copy, broken / "images.json"))


def test_error_bodies_of_unknown_ids_and_routes_name_no_paths(client: httpx.Client, tiny_index: TinyIndex):
    secrets = _secrets(tiny_index.root, tiny_index.archive / tiny_index.ids[0])
    for url in (
        "/images/../../etc/passwd",
        "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/thumbnail",
        f"/images/{tiny_index.archive}/images/img000.png",
        "/images/images/img000.png/explain.png?query=boats&word=999",
        "/no/such/route",
    ):
        response = client.get(url)
        assert 400 <= response.status_code < 500, (url, response.text)
        assert_no_path(response.text.replace(str(tiny_index.archive), "<given>"), secrets)

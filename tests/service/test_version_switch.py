"""Publishing a new index version while the server is busy: no request fails, each response is
consistent with the one version it names, and the server ends up on the new version."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from rsir.index.atomic import write_text
from rsir.index_builder.build import delete
from tests.service.conftest import ServerFactory, TinyIndex, metric

WORKERS = 4


def test_a_new_version_is_switched_to_without_dropping_requests(
    serve: ServerFactory, tiny_index: TinyIndex, index_copy: Path
):
    server = serve(index=index_copy, index_poll_s=0.2, cache_lru_entries=0)
    gone, kept = tiny_index.ids[12], tiny_index.ids[13]
    n = len(tiny_index.ids)
    client = server.client()
    old_version = client.get("/version").json()["index"]["version"]
    png = tiny_index.file(kept).read_bytes()

    stop = threading.Event()
    lock = threading.Lock()
    outcomes: list[tuple[str, int, dict[str, Any] | None]] = []
    failures: list[str] = []

    def work(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            i = 0
            while not stop.is_set():
                kind = ("coarse", "ftf", "image", "original")[(i + worker) % 4]
                try:
                    if kind == "coarse":
                        r = c.post(
                            "/search/text", json={"query": f"w{worker} q{i}", "k": n, "rerank": "none"}
                        )
                    elif kind == "ftf":
                        r = c.post("/search/text", json={"query": f"rerank w{worker} q{i}", "k": 5})
                    elif kind == "image":
                        r = c.post(
                            "/search/image", files={"file": ("q.png", png, "image/png")}, data={"k": str(n)}
                        )
                    else:
                        r = c.get(f"/images/{kept}")
                except httpx.HTTPError as exc:  # a dropped connection is a failure too
                    with lock:
                        failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                body = r.json() if r.headers.get("content-type") == "application/json" else None
                with lock:
                    outcomes.append((kind, r.status_code, body))
                i += 1

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        new_version = delete(index_copy, [gone]).name
        deadline = time.monotonic() + 10
        while client.get("/version").json()["index"]["version"] != new_version:
            assert time.monotonic() < deadline, "the server did not switch to the new version"
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert not failures, failures[:5]
    assert len(outcomes) >= 20
    bad = [(kind, status, body) for kind, status, body in outcomes if status != 200]
    assert not bad, bad[:3]
    searches = [(kind, body) for kind, _, body in outcomes if body is not None]
    versions = {body["index_version"] for _, body in searches}
    assert versions == {old_version, new_version}  # requests were served across the switch
    for kind, body in searches:
        if kind == "ftf":
            continue
        ids = [h["id"] for h in body["results"]]
        # Each response is whole: all of its version's live images, the deleted one only before.
        if body["index_version"] == old_version:
            assert len(ids) == n and gone in ids
        else:
            assert len(ids) == n - 1 and gone not in ids

    after = client.post("/search/text", json={"query": "after the switch", "k": n, "rerank": "none"}).json()
    assert after["index_version"] == new_version
    assert gone not in {h["id"] for h in after["results"]}
    assert client.get("/readyz").json()["index"]["last_switch_error"] is None
    assert metric(client, "rsir_index_switches_total") == 1
    assert metric(client, "rsir_index_images", version=new_version) == n
    assert metric(client, "rsir_http_requests_total", status="500") == 0


def _broken_copy(root: Path, name: str, damage: str) -> None:
    """Publish ``name``: a copy of the current version with one kind of damage, and point CURRENT at it."""
    current = root / (root / "CURRENT").read_text().strip()
    target = root / name
    shutil.copytree(current, target)
    if damage == "recall":
        (target / "recall.faiss").write_bytes(b"not a faiss index")
    elif damage == "ids":
        (target / "images.json").write_text('["only-one-id"]')
    elif damage == "encoder":
        manifest = json.loads((target / "manifest.json").read_text())
        manifest["encoder"]["dim"] = 999
        (target / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "vectors":
        (target / "image_vectors.npy").write_bytes(b"\x93NUMPY garbage")
    write_text(root / "CURRENT", name + "\n")  # atomically, as publishing does


@pytest.mark.parametrize("damage", ["missing", "unreadable", "recall", "ids", "encoder", "vectors"])
def test_a_broken_publish_keeps_the_old_version_and_a_later_good_one_is_taken(
    serve: ServerFactory, tiny_index: TinyIndex, index_copy: Path, damage: str
):
    server = serve(index=index_copy, index_poll_s=0.05)
    client = server.client()
    good = client.get("/version").json()["index"]["version"]
    if damage == "missing":
        (index_copy / "CURRENT").write_text("v0042\n")
    elif damage == "unreadable":
        (index_copy / "CURRENT").write_bytes(b"\xff\xfev0042\n")  # not UTF-8
    else:
        _broken_copy(index_copy, "v0042", damage)
    deadline = time.monotonic() + 10
    while client.get("/readyz").json()["index"]["last_switch_error"] is None:
        assert time.monotonic() < deadline, "the broken version was never noticed"
        time.sleep(0.05)
    ready = client.get("/readyz").json()
    assert ready["index"]["version"] == good
    if damage != "unreadable":
        assert "v0042" in ready["index"]["last_switch_error"]
    response = client.post("/search/text", json={"query": "still serving", "k": 3})
    assert response.status_code == 200 and response.json()["index_version"] == good

    # The operator fixes it: CURRENT back on the good version, then a proper new version.
    (index_copy / "CURRENT").write_text(good + "\n")
    if (index_copy / "v0042").exists():
        shutil.rmtree(index_copy / "v0042")
    fixed = delete(index_copy, [tiny_index.ids[0]]).name
    deadline = time.monotonic() + 10
    while client.get("/version").json()["index"]["version"] != fixed:
        assert time.monotonic() < deadline, "the server never switched to the good version after a broken one"
        time.sleep(0.05)
    assert client.get("/readyz").json()["index"]["last_switch_error"] is None


def _wait_for(check: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("damage", ["unreadable", "recall"])
def test_a_broken_current_is_logged_once_and_cleared_when_the_served_version_is_current_again(
    serve: ServerFactory, index_copy: Path, damage: str
):
    server = serve(index=index_copy, index_poll_s=0.02)
    client = server.client()
    good = client.get("/version").json()["index"]["version"]

    def last_error() -> Any:
        return client.get("/readyz").json()["index"]["last_switch_error"]

    with structlog.testing.capture_logs() as logs:
        if damage == "unreadable":
            (index_copy / "CURRENT.tmp").write_bytes(b"\xff\xfev0042\n")
            (index_copy / "CURRENT.tmp").replace(index_copy / "CURRENT")
        else:
            _broken_copy(index_copy, "v0042", damage)
        _wait_for(lambda: last_error() is not None, "the broken CURRENT was never noticed")
        time.sleep(1.0)  # about 50 more polls of the same broken CURRENT
        assert last_error() is not None
        # The operator rolls CURRENT back to the version being served: nothing is wrong any more.
        write_text(index_copy / "CURRENT", good + "\n")
        _wait_for(lambda: last_error() is None, "a stale last_switch_error stayed after the rollback")
    failures = [e for e in logs if e["event"] == "index_switch_failed"]
    assert len(failures) == 1, failures
    assert client.get("/version").json()["index"]["version"] == good


def test_a_broken_version_repaired_in_place_is_taken(serve: ServerFactory, index_copy: Path):
    server = serve(index=index_copy, index_poll_s=0.02)
    client = server.client()
    good = client.get("/version").json()["index"]["version"]
    _broken_copy(index_copy, "v0042", "recall")
    _wait_for(lambda: client.get("/readyz").json()["index"]["last_switch_error"] is not None, "never noticed")
    time.sleep(0.3)  # polls of the unchanged broken version: not reloaded, not logged again
    shutil.copyfile(index_copy / good / "recall.faiss", index_copy / "v0042" / "recall.faiss")
    _wait_for(lambda: client.get("/version").json()["index"]["version"] == "v0042", "repair never taken")
    assert client.get("/readyz").json()["index"]["last_switch_error"] is None

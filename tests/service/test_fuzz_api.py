"""Property-based requests from the service's own OpenAPI schema (schemathesis) against a real server:
whatever the generator sends, valid or not, no answer is a 5xx, and every answer whose status the
description documents has the documented body (the search routes' checked ``SearchResponse``, the one
error body).

The hand-written cases in test_errors.py name the expected 4xx for each known bad input; this test
looks for the inputs nobody thought of. A fixed seed keeps a failure reproducible; the image id is
pinned to an indexed image so the thumbnail and explain routes get past their 404 and their query
parameters are exercised too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import LiveServer, ServerFactory, TinyIndex

SEED = 20261201
EXAMPLES = 40


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    found = str(exe) if exe.exists() else shutil.which("schemathesis")
    if found is None:
        pytest.skip("schemathesis is not installed (the dev extra brings it)")
    return found


@pytest.mark.slow
@pytest.mark.parametrize("keys", [False, True])
def test_no_generated_request_gets_a_server_error(
    serve: ServerFactory, tiny_index: TinyIndex, tmp_path: Path, keys: bool
) -> None:
    # With keys on, every generated request carries a valid key, so it reaches past the gate.
    server: LiveServer = serve(api_keys={"fuzz-key": 0}) if keys else serve()
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.image_id" = "{tiny_index.ids[0]}"\n')
    cmd = [
        _schemathesis(),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "30",
        *(["--header", "X-API-Key: fuzz-key"] if keys else []),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    # The run must have reached the API, not stopped at loading the schema (10 operations, with
    # GET /scenes/{scene_id}/overview.png: a 404 here, the tiny index has no scenes).
    assert "passed" in run.stdout and "10 selected" in run.stdout, report

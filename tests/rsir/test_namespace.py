"""The project is imported under one name: a notebook folder holding its own ``model.py``,
``search.py``, ``index.py`` and ``service.py`` can still ``import rsir`` and search (issue 20)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rsir.index_builder.demo import build_demo_index, shipped_encoder
from tests.conftest import REPO

PACKAGES = ("model", "index", "search", "index_builder", "service", "loadtest", "synthrs")

NOTEBOOK = """
import sys

import rsir
import rsir.cli, rsir.index_builder.build, rsir.service.app, rsir.synthrs  # every layer

idx = rsir.open_index(sys.argv[1], device="cpu")
hits = idx.search_text("a residential area with houses", k=3)
import model, search  # the user's own modules, not rsir's
print(model.OWNER, search.OWNER, len(hits))
print(",".join(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))))
"""


@pytest.mark.slow
def test_a_users_own_model_py_does_not_shadow_rsir(tmp_path: Path) -> None:
    demo = build_demo_index(tmp_path / "demo", 8, shipped_encoder())
    folder = tmp_path / "notebook"
    folder.mkdir()
    for name in ("model", "search", "index", "service"):
        # imported by rsir by mistake, these would fail its imports (no SearchEngine, no encoders)
        (folder / f"{name}.py").write_text(f"OWNER = 'user {name}'\n")
    (folder / "nb.py").write_text(textwrap.dedent(NOTEBOOK))
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # the checkout, as an editable install puts it
    out = subprocess.run(
        [sys.executable, "nb.py", str(demo.root), ",".join(PACKAGES)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    first, loaded = out.stdout.strip().splitlines()[-2:]
    assert first == "user model user search 3"
    # of the generic names, only the user's two modules were imported: rsir imported none of its own
    assert loaded == "model,search"

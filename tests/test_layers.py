"""The architecture's layering, checked on every run: no import circles and no import from a lower
layer to a higher one (``model``/``synthrs`` <- ``index`` <- ``index_builder``/``search`` <-
``service``/``rsir``), by the import-graph tool run as a reviewer runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = "model,synthrs,index,index_builder:search,service:rsir"


def _graph(root: Path) -> subprocess.CompletedProcess[str]:
    tool = REPO / "scripts" / "import_graph.py"
    args = [sys.executable, str(tool), "--namespace", "rsir", "--layers", LAYERS]
    return subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=120, check=False)


def test_no_circles_and_no_upward_imports() -> None:
    done = _graph(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no circles, no upward imports" in done.stdout


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    # The check itself must be able to fail: a model module importing the service is caught.
    for pkg in ("rsir", "model", "service"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "service" / "app.py").write_text("X = 1\n")
    (tmp_path / "model" / "ftf.py").write_text("from rsir.service.app import X\n")
    done = _graph(tmp_path)
    assert done.returncode == 1
    assert "upward: model.ftf -> service.app" in done.stdout, done.stdout

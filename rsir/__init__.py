"""rsir: the `rsir` command line and, for notebooks, the Python API (``rsir.open_index``).

Every part of the project is imported through this one name: ``rsir.model``, ``rsir.index``,
``rsir.search``, ``rsir.index_builder``, ``rsir.service``, ``rsir.synthrs``, ``rsir.loadtest`` are the
top-level folders of the same names (links here in a checkout, copies in the wheel), so a user's own
``model.py`` or ``search.py`` beside a notebook cannot shadow them.

``import rsir`` stays light (the CLI reads only ``__version__`` at start); the API's modules load on
first use of ``rsir.open_index`` or ``rsir.Index``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rsir.api import Index, open_index

__all__ = ["Index", "__version__", "open_index"]

try:
    __version__ = version("rsir")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name in ("open_index", "Index"):
        from rsir import api

        return getattr(api, name)
    raise AttributeError(f"module 'rsir' has no attribute {name!r}")

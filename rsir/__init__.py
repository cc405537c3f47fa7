"""rsir: the `rsir` command line and, for notebooks, the Python API (``rsir.open_index``).

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

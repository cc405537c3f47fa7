"""Container health check without curl: ``python -m rsir.service.healthcheck [--ready] [--url URL]``.

Exits 0 when the service on this host answers 200 on ``/healthz`` (``/readyz`` with ``--ready``: model
and index loaded), 1 otherwise. The images' ``HEALTHCHECK`` and compose's health checks run it. It
imports only the standard library, so a probe costs one interpreter start-up, never a model load, and
it goes straight to the address (no ``HTTP_PROXY`` detour).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_PORT = 8000


def probe(url: str, timeout_s: float) -> tuple[bool, str]:
    """``(answered 200, what happened)`` for one GET of ``url``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            status = int(resp.status)
            return status == 200, f"HTTP {status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"no answer ({exc})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsir.service.healthcheck", description=__doc__)
    parser.add_argument("--ready", action="store_true", help="probe /readyz instead of /healthz")
    parser.add_argument(
        "--url", help=f"base URL (default: http://127.0.0.1:$RSIR_PORT, port {DEFAULT_PORT} when unset)"
    )
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    base = args.url or f"http://127.0.0.1:{os.environ.get('RSIR_PORT') or DEFAULT_PORT}"
    path = "/readyz" if args.ready else "/healthz"
    ok, detail = probe(base.rstrip("/") + path, args.timeout)
    (sys.stdout if ok else sys.stderr).write(f"{base.rstrip('/')}{path}: {detail}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

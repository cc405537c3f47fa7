"""Short-lived signed image URLs: with API keys on, a search result's image, thumbnail and overlay
URLs carry ``t=<expiry>.<key digest>.<HMAC>`` so an ``<img>`` (which cannot send headers) may fetch
exactly those images, for a while, on the searching key's account.

Tokens are added when a response is sent, never stored in the result cache: a cached body is shared
by every key and outlives any token.
"""

from __future__ import annotations

import hmac
import time
from typing import Any
from urllib.parse import quote

_SIG_HEX = 32  # 128 bits of HMAC-SHA256: enough against forgery, short in a URL


class UrlSigner:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._secret = secret
        self.ttl_s = ttl_s

    def token(self, image_id: str, key_id: str, now: float | None = None) -> str:
        # Expiries are rounded up to the minute, so a page's repeated searches give the browser the
        # same URLs (and its cache a hit) within that minute.
        expires = (int(now if now is not None else time.time()) // 60 + 1) * 60 + self.ttl_s
        return f"{expires}.{key_id}.{self._sign(image_id, expires, key_id)}"

    def verify(self, image_id: str, token: str, now: float | None = None) -> str | None:
        """The key digest a valid, unexpired token for ``image_id`` was issued to; else ``None``."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires, key_id, sig = int(parts[0]), parts[1], parts[2]
        if expires < (now if now is not None else time.time()):
            return None
        return key_id if hmac.compare_digest(sig, self._sign(image_id, expires, key_id)) else None

    def _sign(self, image_id: str, expires: int, key_id: str) -> str:
        message = f"{image_id}\n{expires}\n{key_id}".encode()
        return hmac.digest(self._secret, message, "sha256").hex()[:_SIG_HEX]


def with_token(url: str, token: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}t={quote(token)}"


def sign_results(results: list[dict[str, Any]], signer: UrlSigner, key_id: str) -> list[dict[str, Any]]:
    """Copies of the hits with every image URL signed for ``key_id``."""
    signed = []
    for hit in results:
        image_id = hit.get("id") or hit.get("image_id")
        token = signer.token(str(image_id), key_id)
        out = dict(hit)
        for field in ("image_url", "thumbnail_url"):
            if field in out:
                out[field] = with_token(out[field], token)
        if isinstance(out.get("explain"), dict):
            explain = dict(out["explain"])
            explain["overlay_urls"] = [with_token(u, token) for u in explain["overlay_urls"]]
            out["explain"] = explain
        signed.append(out)
    return signed

"""Short-lived signed image URLs: with API keys on, a search result's image, thumbnail and overlay
URLs carry ``t=<expiry>.<key digest>.<HMAC>`` so an ``<img>`` (which cannot send headers) may fetch
exactly those images, for a while, on the searching key's account.

Tokens are added when a response is sent, never stored in the result cache: a cached body is shared
by every key and outlives any token.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from urllib.parse import quote

from rsir.service.schemas import CaptionHit, ImageHit

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


def sign_results(
    results: Sequence[ImageHit] | Sequence[CaptionHit], signer: UrlSigner, key_id: str
) -> list[ImageHit] | list[CaptionHit]:
    """Copies of the hits with every image URL signed for ``key_id``."""
    if all(isinstance(hit, CaptionHit) for hit in results):
        return [_signed_caption(hit, signer, key_id) for hit in results if isinstance(hit, CaptionHit)]
    return [_signed_image(hit, signer, key_id) for hit in results if isinstance(hit, ImageHit)]


def _signed_image(hit: ImageHit, signer: UrlSigner, key_id: str) -> ImageHit:
    token = signer.token(hit.id, key_id)
    explain = hit.explain
    if explain is not None:
        urls = [with_token(u, token) for u in explain.overlay_urls]
        explain = explain.model_copy(update={"overlay_urls": urls})
    return hit.model_copy(
        update={
            "image_url": with_token(hit.image_url, token),
            "thumbnail_url": with_token(hit.thumbnail_url, token),
            "explain": explain,
        }
    )


def _signed_caption(hit: CaptionHit, signer: UrlSigner, key_id: str) -> CaptionHit:
    token = signer.token(hit.image_id, key_id)
    return hit.model_copy(update={"thumbnail_url": with_token(hit.thumbnail_url, token)})

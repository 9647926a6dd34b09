"""Optional API key: `X-API-Key: KEY`, `Authorization: Bearer KEY` or openpi's `Authorization: Api-Key KEY`."""

from __future__ import annotations

import hmac
from typing import Mapping

API_KEY_ENV = "ROBOVLA_API_KEY"


def presented_key(headers: Mapping[str, str]) -> str | None:
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() in ("bearer", "api-key") and value.strip() else None


def is_authorized(headers: Mapping[str, str], api_key: str | None) -> bool:
    """No key configured: everyone. Otherwise a constant-time comparison with the presented key."""
    if api_key is None:
        return True
    key = presented_key(headers)
    return key is not None and hmac.compare_digest(key.encode(), api_key.encode())

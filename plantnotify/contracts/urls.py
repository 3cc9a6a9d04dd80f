"""HTTP paths of the contract (§3) that other parts put into payloads (the events' ``imageUrl``)."""

from __future__ import annotations

API_PREFIX = "/api/v1"


def image_path(analysis_id: str) -> str:
    """``/api/v1/plantanalyses/{id}/image``: the uploaded image, readable only by its owner."""
    if not analysis_id or any(c in analysis_id for c in "/?#"):
        raise ValueError(f"invalid analysis id {analysis_id!r}")
    return f"{API_PREFIX}/plantanalyses/{analysis_id}/image"


def image_url(analysis_id: str, public_base_url: str | None = None) -> str:
    """Absolute when ``PUBLIC_BASE_URL`` is set, else the path (relative to the API's origin)."""
    path = image_path(analysis_id)
    return f"{public_base_url.rstrip('/')}{path}" if public_base_url else path

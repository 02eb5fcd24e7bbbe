"""The health view: 200 with the store's facts, 503 with the reason it cannot serve."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils.cache import add_never_cache_headers

from vimbiso_state.domain.errors import StateError
from vimbiso_state.integrations.django.service import state_service


def health(request: HttpRequest) -> HttpResponse:
    """GET: ``{"status": "healthy", "backend": ...}`` (200), or ``{"status": "unhealthy",
    "reason": ...}`` (503) when the store cannot serve or the configuration is bad."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    response: HttpResponse
    try:
        facts = state_service().health()
    except StateError as exc:  # StateUnavailable, or ConfigurationError
        response = JsonResponse({"status": "unhealthy", "reason": str(exc)}, status=503)
    else:
        response = JsonResponse({"status": "healthy", **facts.as_dict()})
    add_never_cache_headers(response)
    return response

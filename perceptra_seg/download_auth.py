"""The Hugging Face access token of gated checkpoint downloads (SAM 3's ``sam3.pt``), and where it may go.

The token is sent as ``Authorization: Bearer <token>`` only to the origin (scheme, host, port) of the catalogue URL
it was meant for. The hub answers a download with a redirect to a CDN whose URL is already signed; that request,
and any other one a redirect leads to on another origin, goes without the header. The token is never logged and
never put in an error message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

__all__ = ["HUB_HOST", "auth_hook", "hub_token", "refused_download_message"]

#: The host whose catalogue URLs get the token (``https://huggingface.co/<org>/<repo>/resolve/...``).
HUB_HOST = "huggingface.co"


def hub_token() -> str | None:
    """The Hugging Face access token: ``HF_TOKEN`` from the environment, else the one ``huggingface_hub`` stored
    (``huggingface-cli login``; ``huggingface_hub.get_token()``), else ``None``."""
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token
    try:
        from huggingface_hub import get_token
    except ImportError:
        return None
    try:
        stored = get_token()
    except Exception:  # an unreadable token file must not break a download that may not need it
        return None
    if not stored or not stored.strip():
        return None
    return stored.strip()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


def auth_hook(url: str, token: str) -> Callable[[httpx.Request], None]:
    """An httpx ``request`` event hook: ``Authorization: Bearer <token>`` on requests to ``url``'s origin (scheme,
    host and port all equal), and no ``Authorization`` header on any other request (a redirect's target)."""
    origin = _origin(httpx.URL(url))

    def hook(request: httpx.Request) -> None:
        if _origin(request.url) == origin:
            request.headers["Authorization"] = f"Bearer {token}"
        else:
            request.headers.pop("Authorization", None)

    return hook


def _model_page(url: str) -> str | None:
    """``https://huggingface.co/<org>/<repo>`` for a hub file URL, else ``None``."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if parts.hostname == HUB_HOST and len(segments) >= 2:
        return f"https://{HUB_HOST}/{segments[0]}/{segments[1]}"
    return None


def refused_download_message(url: str, status: int, *, token_sent: bool) -> str:
    """What to do about a 401 / 403 answer to a checkpoint download (the token itself is never named)."""
    page = _model_page(url) or "the model's page"
    if token_sent:
        advice = (
            f"a token was sent but not accepted: accept the model's licence at {page} with the account the token "
            "belongs to, and check that HF_TOKEN (or the token stored by `huggingface-cli login`) is a valid access "
            "token that may read gated repositories"
        )
    else:
        advice = (
            f"the file is gated: accept the model's licence at {page}, then set HF_TOKEN to a Hugging Face access "
            "token of that account (or log in with `huggingface-cli login`)"
        )
    return f"download of {url} refused: HTTP {status}; {advice}"

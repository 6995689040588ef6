"""Single JSON requests to kube-apiserver through a kubernetes-asyncio ApiClient (its credentials and TLS),
answering (HTTP status, decoded body) with plain dicts, each bounded by a timeout."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from aggapi.controllers.informer import Obj

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeUnavailable(Exception):
    """kube-apiserver could not be reached, or did not answer in time."""


@dataclass(frozen=True, slots=True)
class KubeAnswer:
    status: int
    body: Obj

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        return str(self.body.get("message") or self.body.get("reason") or f"HTTP {self.status}")


async def kube_request(
    api: Any,
    method: str,
    path: str,
    body: Any = None,
    *,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
    timeout: float = 10.0,
) -> KubeAnswer:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    try:
        async with asyncio.timeout(timeout):
            resp = await api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(total=timeout),
            )
            try:
                text = await resp.text()
            finally:
                resp.release()
    except TimeoutError:
        raise KubeUnavailable(f"{method} {path}: no answer within {timeout:g}s") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise KubeUnavailable(f"{method} {path}: {exc or type(exc).__name__}") from exc
    try:
        decoded = json.loads(text) if text.strip() else {}
    except ValueError:
        decoded = {"message": text.strip()[:200]}
    return KubeAnswer(int(resp.status), decoded if isinstance(decoded, dict) else {})

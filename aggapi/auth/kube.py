"""Delegation to kube-apiserver (kubernetes-asyncio): TokenReview, SubjectAccessReview and following
the extension-apiserver-authentication ConfigMap."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from aggapi.auth.authconfig import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, AuthConfig, from_configmap
from aggapi.auth.authn import UserInfo
from aggapi.auth.authz import Attributes, Decision
from aggapi.machinery import apierrors

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10


async def api_client(kubeconfig: str) -> Any:
    """An ApiClient from a kubeconfig file, or the in-cluster service account when it is empty."""
    cfg = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


class KubeTokenReviewer:
    def __init__(self, api: Any) -> None:
        self._api = client.AuthenticationV1Api(api)

    async def review(self, token: str) -> UserInfo | None:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
        try:
            res = await self._api.create_token_review(body=body, _request_timeout=REQUEST_TIMEOUT)
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("TokenReview failed: %s", exc)
            raise apierrors.service_unavailable(
                "token review is unavailable: cannot reach kube-apiserver"
            ) from None
        status = res.status
        if status is None or not status.authenticated or status.user is None:
            return None
        u = status.user
        extra = {k: tuple(v) for k, v in (u.extra or {}).items()}
        return UserInfo(u.username or "", tuple(u.groups or ()), u.uid or "", extra)


class KubeAccessReviewer:
    def __init__(self, api: Any) -> None:
        self._api = client.AuthorizationV1Api(api)

    async def review(self, a: Attributes) -> Decision:
        spec: dict[str, Any] = {
            "user": a.user.name,
            "groups": list(a.user.groups),
            "uid": a.user.uid,
            "extra": {k: list(v) for k, v in a.user.extra.items()},
        }
        if a.is_resource:
            spec["resourceAttributes"] = {
                "namespace": a.namespace,
                "verb": a.verb,
                "group": a.group,
                "version": a.version,
                "resource": a.resource,
                "subresource": a.subresource,
                "name": a.name,
            }
        else:
            spec["nonResourceAttributes"] = {"path": a.path, "verb": a.verb}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        try:
            res = await self._api.create_subject_access_review(body=body, _request_timeout=REQUEST_TIMEOUT)
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("SubjectAccessReview failed: %s", exc)
            raise apierrors.service_unavailable(
                "authorization is unavailable: cannot reach kube-apiserver"
            ) from None
        st = res.status
        return Decision(bool(st and st.allowed and not st.denied), (st.reason or "") if st else "")


class AuthConfigSource:
    """The current AuthConfig: kube-apiserver's published ConfigMap merged with what flags set.
    `run()` follows the ConfigMap (list + watch, relist on errors)."""

    def __init__(
        self,
        api: Any | None,
        overrides: AuthConfig,
        *,
        retry: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._core = client.CoreV1Api(api) if api is not None else None
        self._overrides = overrides
        self._published = AuthConfig()
        self.current = self._merge()
        self._retry = retry
        self._sleep = sleep

    def __call__(self) -> AuthConfig:
        return self.current

    def set_overrides(self, overrides: AuthConfig) -> None:
        """New flag-given CAs (their files changed on disk)."""
        if overrides != self._overrides:
            self._overrides = overrides
            self.current = self._merge()
            log.info("client CA files changed: reloaded")

    def _merge(self) -> AuthConfig:
        o, p = self._overrides, self._published
        # Flags win over the ConfigMap, one setting at a time (as in the Go delegating options).
        return AuthConfig(o.client_ca_pem or p.client_ca_pem, o.requestheader or p.requestheader)

    def _apply(self, data: dict[str, str] | None) -> None:
        try:
            published = from_configmap(data or {})
        except ValueError as exc:
            log.warning("ignoring malformed %s/%s: %s", CONFIGMAP_NAMESPACE, CONFIGMAP_NAME, exc)
            return
        if published != self._published:
            self._published = published
            self.current = self._merge()
            log.info(
                "loaded client CA / front-proxy settings from %s/%s", CONFIGMAP_NAMESPACE, CONFIGMAP_NAME
            )

    async def load(self) -> str:
        """Read the ConfigMap once; returns the list resourceVersion to watch from."""
        if self._core is None:
            return ""
        res = await self._core.list_namespaced_config_map(
            CONFIGMAP_NAMESPACE,
            field_selector=f"metadata.name={CONFIGMAP_NAME}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        self._apply(res.items[0].data if res.items else None)
        return str(res.metadata.resource_version)

    async def run(self) -> None:
        if self._core is None:
            return
        while True:
            try:
                rv = await self.load()
                w = watch.Watch()
                async with asyncio.timeout(600):
                    async for ev in w.stream(
                        self._core.list_namespaced_config_map,
                        CONFIGMAP_NAMESPACE,
                        field_selector=f"metadata.name={CONFIGMAP_NAME}",
                        resource_version=rv,
                        timeout_seconds=300,
                    ):
                        obj = ev["object"]
                        self._apply(None if ev["type"] == "DELETED" else obj.data)
            except (ApiException, OSError, TimeoutError, ValueError) as exc:
                log.warning("following %s/%s: %s; retrying", CONFIGMAP_NAMESPACE, CONFIGMAP_NAME, exc)
                await self._sleep(self._retry)

"""aggapi follows kube-system/extension-apiserver-authentication as kube-apiserver changes it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from support.devcluster import Devcluster

from aggapi.auth.authconfig import AuthConfig
from aggapi.auth.kube import AuthConfigSource, api_client
from certs.pki import new_ca

CM = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"


class Recording(AuthConfigSource):
    """Remembers every configuration it adopted (the devcluster re-publishes its own soon after)."""

    seen: list[AuthConfig]

    def _apply(self, data: dict[str, str] | None) -> None:
        super()._apply(data)
        self.seen.append(self.current)


async def test_a_changed_configmap_is_adopted_through_the_watch(
    devcluster: Devcluster, tmp_path: Path
) -> None:
    api = await api_client(str(devcluster.kubeconfig(tmp_path / "kubeconfig")))
    source = Recording(api, AuthConfig())
    source.seen = []
    try:
        await source.load()
        published = source.current
        assert published.client_cas and published.requestheader is not None
        assert published.requestheader.allowed_names == ("front-proxy-client",)
        follower = asyncio.create_task(source.run(), name="follow-configmap")
        try:
            await asyncio.sleep(0.5)  # the watch is open
            extra_ca = new_ca("rotated-client-ca").cert_pem().decode()
            status, cm = await asyncio.to_thread(devcluster.admin().get, CM)
            assert status == 200
            data = dict(cm["data"])
            data["client-ca-file"] = data["client-ca-file"] + extra_ca
            data["requestheader-allowed-names"] = json.dumps(["front-proxy-client", "second-proxy"])
            status, _ = await asyncio.to_thread(
                devcluster.admin().request,
                "PATCH",
                CM,
                {"data": data},
                {"Content-Type": "application/merge-patch+json"},
            )
            assert status == 200
            for _ in range(100):
                if any(len(c.client_cas) == len(published.client_cas) + 1 for c in source.seen):
                    break
                await asyncio.sleep(0.05)
            adopted = [c for c in source.seen if len(c.client_cas) == len(published.client_cas) + 1]
            assert adopted, "the changed ConfigMap was not picked up"
            assert adopted[0].requestheader is not None
            assert adopted[0].requestheader.allowed_names == ("front-proxy-client", "second-proxy")
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    finally:
        await api.close()

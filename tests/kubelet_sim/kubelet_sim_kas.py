"""A test-only kube-apiserver stand-in: just enough for the real kubectl to reach a kubelet-sim.

It is the reference for what the devcluster (and the tunnel behind it) must do with kubelet traffic:

- answer discovery (/api, /apis, /api/v1) and GET of pods, so kubectl can resolve `pod/<name>`;
- map pod subresources to kubelet paths exactly as kube-apiserver does (pkg/registry/core/pod/strategy.go):
    pods/{p}/exec?container=c&command=..&stdin=true&stdout=true&stderr=true&tty=true
        -> /exec/{ns}/{p}/{c}?command=..&input=1&output=1&error=1&tty=1   (false flags are omitted)
    pods/{p}/attach?container=c&stdin=..   -> /attach/{ns}/{p}/{c}?input=1&output=1&error=1&tty=1
    pods/{p}/log?container=c&follow=..&tailLines=..&timestamps=..&limitBytes=..&previous=..
                 &sinceSeconds=..&sinceTime=..   -> /containerLogs/{ns}/{p}/{c}?<same names>
    pods/{p}/portforward?ports=8080        -> /portForward/{ns}/{p}?port=8080
    nodes/{n}/proxy/{path}?{query}         -> /{path}?{query}
  (no container given: the pod's only container, else 400 as kube-apiserver answers);
- open TLS to <node InternalIP>:<daemonEndpoints.kubeletEndpoint.Port> with the kubelet-client cert;
- send the client's request line method, its headers minus hop-by-hop ones, Authorization and
  Impersonate-*, with Host rewritten; for an upgrade keep `Connection: Upgrade` and `Upgrade`
  (websocket or SPDY/3.1) and pass Sec-WebSocket-Key/-Version/-Protocol/-Extensions and every
  X-Stream-Protocol-Version value through untouched;
- relay the kubelet's response head as-is (for a 101 this carries Sec-WebSocket-Accept/-Protocol or
  X-Stream-Protocol-Version, which the client verifies), then copy bytes both ways until either side
  closes; a non-101 answer is relayed as an ordinary response. Plain responses (logs, proxy) are
  streamed back unbuffered, so `follow=true` works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "authorization", "host", "content-length"}  # fmt: skip
_BOOL_TO_KUBELET = {"stdin": "input", "stdout": "output", "stderr": "error", "tty": "tty"}
_LOG_PARAMS = ("follow", "previous", "timestamps", "sinceSeconds", "sinceTime", "tailLines", "limitBytes")


def _json(status: int, body: Any) -> bytes:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 502: "Bad Gateway"}.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data


def _status(code: int, message: str) -> bytes:
    return _json(
        code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}
    )


def _discovery(path: str) -> Any:
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
    res = [
        ("pods", "Pod", True, ["get", "list"]),
        ("pods/exec", "PodExecOptions", True, ["create", "get"]),
        ("pods/attach", "PodAttachOptions", True, ["create", "get"]),
        ("pods/log", "Pod", True, ["get"]),
        ("pods/portforward", "PodPortForwardOptions", True, ["create", "get"]),
        ("nodes", "Node", False, ["get", "list"]),
        ("nodes/proxy", "NodeProxyOptions", False, ["create", "delete", "get", "patch", "update"]),
    ]
    return {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": v} for n, k, ns, v in res
        ],
    }


class KasStub:
    def __init__(
        self,
        pods: list[Mapping[str, Any]],
        nodes: Mapping[str, str],
        kubelet_client: ssl.SSLContext,
        kubelet_port: int = 10250,
    ) -> None:
        self._pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        self._nodes = dict(nodes)  # node name -> InternalIP
        self._tls = kubelet_client
        self._kubelet_port = kubelet_port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> KasStub:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; False when the connection is done (upgraded, streamed, or closed)."""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [tuple(v.strip() for v in ln.split(":", 1)) for ln in lines[1:] if ln]
        hmap = {k.lower(): v for k, v in headers}
        if int(hmap.get("content-length", "0")):
            await reader.readexactly(int(hmap["content-length"]))
        url = urlsplit(target)
        parts = url.path.strip("/").split("/")
        query = parse_qsl(url.query, keep_blank_values=True)
        if url.path in ("/api", "/apis", "/api/v1"):
            writer.write(_json(200, _discovery(url.path)))
        elif parts[:3] == ["api", "v1", "namespaces"] and len(parts) >= 6 and parts[4] == "pods":
            ns, name, sub = parts[3], parts[5], "/".join(parts[6:])
            pod = self._pods.get((ns, name))
            if pod is None:
                writer.write(_status(404, f'pods "{name}" not found'))
            elif not sub:
                writer.write(_json(200, pod))
            else:
                location = self._pod_location(pod, sub, query)
                if isinstance(location, bytes):
                    writer.write(location)
                else:
                    await self._proxy(method, pod["spec"]["nodeName"], location, headers, reader, writer)
                    return False
        elif parts[:3] == ["api", "v1", "nodes"] and len(parts) >= 5 and parts[4] == "proxy":
            path = "/" + "/".join(parts[5:]) + (f"?{url.query}" if url.query else "")
            await self._proxy(method, parts[3], path, headers, reader, writer)
            return False
        else:
            writer.write(_status(404, "the server could not find the requested resource"))
        await writer.drain()
        return True

    def _pod_location(self, pod: Mapping[str, Any], sub: str, query: list[tuple[str, str]]) -> str | bytes:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        q: dict[str, list[str]] = {}
        for k, v in query:
            q.setdefault(k, []).append(v)
        if sub == "portforward":
            ports = ",".join(q.get("ports", []))
            return f"/portForward/{ns}/{name}" + (f"?{urlencode({'port': ports})}" if ports else "")
        containers = [c["name"] for c in pod["spec"]["containers"]]
        container = q.get("container", [""])[0]
        if not container:
            if len(containers) != 1:
                return _status(400, f"a container name must be specified for pod {name}")
            container = containers[0]
        elif container not in containers:
            return _status(400, f"container {container} is not valid for pod {name}")
        if sub == "log":
            params = [(k, v) for k in _LOG_PARAMS for v in q.get(k, []) if v not in ("", "false")]
            return f"/containerLogs/{ns}/{name}/{container}?{urlencode(params)}"
        if sub in ("exec", "attach"):
            params = [(kub, "1") for k, kub in _BOOL_TO_KUBELET.items() if q.get(k, ["false"])[0] == "true"]
            params += [("command", c) for c in q.get("command", [])] if sub == "exec" else []
            return f"/{sub}/{ns}/{name}/{container}?{urlencode(params)}"
        return _status(404, f"unknown subresource {sub}")

    async def _proxy(
        self,
        method: str,
        node: str,
        path: str,
        headers: list[tuple[str, ...]],
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
    ) -> None:
        address = self._nodes.get(node)
        if address is None:
            cwriter.write(_status(404, f'nodes "{node}" not found'))
            return
        upgrade = any(k.lower() == "upgrade" for k, _ in headers)
        try:
            kreader, kwriter = await asyncio.wait_for(
                asyncio.open_connection(address, self._kubelet_port, ssl=self._tls), 10
            )
        except (OSError, TimeoutError) as e:
            cwriter.write(_status(502, f"error dialing backend: {e}"))
            await cwriter.drain()
            return
        out = [f"{method} {path} HTTP/1.1", f"Host: {address}:{self._kubelet_port}"]
        out += [
            f"{k}: {v}"
            for k, v in headers
            if k.lower() not in _HOP and not k.lower().startswith("impersonate-")
        ]
        if upgrade:
            out += ["Connection: Upgrade"] + [f"Upgrade: {v}" for k, v in headers if k.lower() == "upgrade"]
        else:
            out.append("Connection: close")
        kwriter.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        try:
            head = await asyncio.wait_for(kreader.readuntil(b"\r\n\r\n"), 30)
            if not upgrade or b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
                # An ordinary response: the client's connection ends with it, so say so.
                status, *rest = head.decode("latin-1").rstrip("\r\n").split("\r\n")
                kept = [ln for ln in rest if not ln.lower().startswith("connection:")]
                head = ("\r\n".join([status, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")
            cwriter.write(head)
            await _splice(creader, cwriter, kreader, kwriter)
        finally:
            kwriter.close()


async def _splice(
    creader: asyncio.StreamReader,
    cwriter: asyncio.StreamWriter,
    kreader: asyncio.StreamReader,
    kwriter: asyncio.StreamWriter,
) -> None:
    async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await r.read(65536):
                w.write(data)
                await asyncio.wait_for(w.drain(), 30)

    up = asyncio.create_task(copy(creader, kwriter), name="kas-stub:up")
    down = asyncio.create_task(copy(kreader, cwriter), name="kas-stub:down")
    await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    for t in (up, down):
        t.cancel()
    await asyncio.gather(up, down, return_exceptions=True)

"""HTTP CONNECT egress for kube-apiserver's EgressSelector (`proxyProtocol: HTTPConnect`).

Listens on a unix socket (mode 0600: only this user may connect) and/or on TLS TCP that requires a
client certificate from a configured CA. `CONNECT host:port HTTP/1.1` dials through the tunnel, answers
`200 Connection established` and splices. It is never an open proxy: the dialer only reaches registered
nodes' allowed ports, and every refusal is an HTTP status with a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import Protocol

from aggapi.machinery.aio import within
from aggapi.tunnel.config import EgressConfig
from aggapi.tunnel.conn import ByteConn, close_stream, splice
from aggapi.tunnel.errors import DialError
from edge.tunnel.protocol import format_hostport, split_hostport

log = logging.getLogger(__name__)

_REASONS = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 502: "Bad Gateway"}
_REASONS |= {503: "Service Unavailable", 504: "Gateway Timeout", 431: "Request Header Fields Too Large"}


class Dialer(Protocol):
    async def dial(self, target_host: str, port: int, *, timeout: float | None = None) -> ByteConn: ...


class EgressServer:
    def __init__(self, config: EgressConfig, dialer: Dialer) -> None:
        errors = config.validate()
        if errors:
            raise ValueError("; ".join(errors))
        self.config = config
        self._dialer = dialer
        self._handlers: set[asyncio.Task[None]] = set()
        self._started = asyncio.Event()
        self.tls_port = 0
        # The listener's context never changes; its SNI callback gives each new handshake the current
        # one, so a renewed certificate or client CA applies to new connections and open ones stay.
        self._tls_current: ssl.SSLContext | None = None
        self._tls_stamp: tuple[tuple[int, int, int], ...] | None = None
        self.tls_reloads = 0

    async def wait_started(self) -> None:
        await self._started.wait()

    async def run(self) -> None:
        servers: list[asyncio.Server] = []
        try:
            if self.config.uds_path is not None:
                servers.append(await self._start_unix(Path(self.config.uds_path)))
            if self.config.tls_port is not None:
                servers.append(await self._start_tls())
            self._started.set()
            while True:  # until cancelled
                await asyncio.sleep(self.config.cert_reload_interval)
                if self.config.tls_port is not None:
                    await asyncio.to_thread(self.reload_tls_if_changed)
        finally:
            self._started.clear()
            for s in servers:
                s.close()
            # asyncio.Server does not track the connections it handed out; we do, and end them here.
            for t in list(self._handlers):
                t.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            if self.config.uds_path is not None:
                _remove_socket(Path(self.config.uds_path))

    async def _start_unix(self, path: Path) -> asyncio.Server:
        _remove_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Linux creates the socket file with the socket inode's mode: 0600 from the first instant,
            # no window in which another user could connect before a chmod.
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(str(path))
            os.chmod(path, 0o600)
            server = await asyncio.start_unix_server(
                self._on_unix, sock=sock, limit=self.config.max_header_bytes
            )
        except BaseException:
            sock.close()
            raise
        log.info("tunnel egress (HTTP CONNECT) on unix socket %s", path)
        return server

    async def _start_tls(self) -> asyncio.Server:
        c = self.config
        self._tls_stamp = await asyncio.to_thread(self._stamps)
        self._tls_current = await asyncio.to_thread(self._tls_context)
        ctx = await asyncio.to_thread(self._tls_context)
        ctx.sni_callback = self._select
        server = await asyncio.start_server(
            self._on_tls,
            c.tls_bind_address,
            c.tls_port,
            ssl=ctx,
            ssl_handshake_timeout=c.handshake_timeout,
            limit=c.max_header_bytes,
        )
        self.tls_port = server.sockets[0].getsockname()[1]
        log.info(
            "tunnel egress (HTTP CONNECT over TLS) on %s", format_hostport(c.tls_bind_address, self.tls_port)
        )
        return server

    def _select(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if self._tls_current is not None:
            sslobj.context = self._tls_current

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        c = self.config
        out = []
        for path in (c.tls_cert_file, c.tls_key_file, c.client_ca_file):
            st = os.stat(str(path))
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def reload_tls_if_changed(self) -> bool:
        """Re-read the TLS files when they changed and load together (blocking IO: run in a thread).
        A half-written rotation keeps the current context and is retried at the next check."""
        try:
            stamp = self._stamps()
            if stamp == self._tls_stamp:
                return False
            ctx = self._tls_context()
        except (OSError, ssl.SSLError, ValueError) as e:
            log.warning(
                "tunnel egress: TLS files changed but are not usable (keeping the current ones): %s", e
            )
            return False
        self._tls_current, self._tls_stamp = ctx, stamp
        self.tls_reloads += 1
        log.info("tunnel egress: reloaded its TLS certificate and client CA (new connections use them)")
        return True

    def _tls_context(self) -> ssl.SSLContext:
        c = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        assert c.tls_cert_file is not None and c.tls_key_file is not None and c.client_ca_file is not None
        ctx.load_cert_chain(str(c.tls_cert_file), str(c.tls_key_file))
        ctx.load_verify_locations(cafile=str(c.client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def _on_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, "unix")

    async def _on_tls(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.config.allowed_names:
            cn = _peer_cn(writer)
            if cn not in self.config.allowed_names:
                log.warning("egress: client certificate CN %r is not allowed", cn)
                await self._answer(
                    writer, 403, f"client certificate CN {cn!r} is not allowed to use this proxy"
                )
                await close_stream(writer, clean=True)
                return
        await self._serve(reader, writer, "tls")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, via: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn: ByteConn | None = None
        try:
            if len(self._handlers) > self.config.max_connections:
                await self._answer(writer, 503, "too many proxied connections")
                return
            target = await self._read_request(reader, writer)
            if target is None:
                return
            host, port = target
            try:
                conn = await self._dialer.dial(host, port, timeout=self.config.dial_timeout)
            except DialError as e:
                log.info(
                    "egress(%s): CONNECT %s -> %d %s", via, format_hostport(host, port), e.status, e.message
                )
                await self._answer(writer, e.status, e.message)
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await within(writer.drain(), self.config.write_timeout)
            log.debug("egress(%s): CONNECT %s via node %s", via, format_hostport(host, port), conn.node)
            await splice(conn, reader, writer)
            conn = None  # splice closed it
        except (ConnectionError, TimeoutError, ssl.SSLError) as e:
            log.debug("egress(%s): connection ended: %s", via, e)
        finally:
            if conn is not None:
                await conn.close()
            await close_stream(writer, clean=True)
            self._handlers.discard(task)

    async def _read_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        try:
            head = await within(reader.readuntil(b"\r\n\r\n"), self.config.request_timeout)
        except asyncio.LimitOverrunError:
            await self._answer(writer, 431, "request head too large")
            return None
        except asyncio.IncompleteReadError:
            return None  # the client went away
        except TimeoutError:
            await self._answer(writer, 400, f"no complete request within {self.config.request_timeout:g}s")
            return None
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._answer(writer, 400, "malformed request line")
            return None
        method, authority, _ = parts
        if method != "CONNECT":
            await self._answer(
                writer, 405, "only CONNECT is supported (this is a tunnel, not a forward proxy)"
            )
            return None
        try:
            return split_hostport(authority)
        except ValueError as e:
            await self._answer(writer, 400, f"bad CONNECT target: {e}")
            return None

    async def _answer(self, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        body = (message.replace("\r", " ").replace("\n", " ") + "\n").encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError, TimeoutError):
            writer.write(head + body)
            await within(writer.drain(), self.config.write_timeout)


def _peer_cn(writer: asyncio.StreamWriter) -> str:
    cert = writer.get_extra_info("peercert") or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def _remove_socket(path: Path) -> None:
    """Remove a stale socket left by a previous run; refuse to delete anything that is not a socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(f"{path} exists and is not a unix socket; not removing it")
    path.unlink()

"""Run a process on a pseudo-terminal (exec with tty=1), with the window size the client reports."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TerminalSize:
    width: int
    height: int


class TtyProcess:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        master: int,
        reader: asyncio.StreamReader,
        rtransport: asyncio.ReadTransport,
        writer: asyncio.WriteTransport,
    ) -> None:
        self.proc = proc
        self.reader = reader
        self._master = master
        self._rtransport = rtransport
        self._writer = writer

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def send_eof(self) -> None:
        # A terminal has no half-close: ^D at the start of a line is how a reader sees end of input.
        self._writer.write(b"\x04")

    def resize(self, size: TerminalSize) -> None:
        fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))

    async def read(self, n: int) -> bytes:
        try:
            return await self.reader.read(n)
        except OSError:  # EIO once the last slave fd is closed: the terminal's end of file
            return b""

    def close(self) -> None:
        self._writer.close()
        self._rtransport.close()
        with contextlib.suppress(OSError):
            os.close(self._master)


async def spawn_tty(argv: list[str], *, cwd: Path, env: dict[str, str]) -> TtyProcess:
    loop = asyncio.get_running_loop()
    master, slave = os.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, start_new_session=True
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    reader = asyncio.StreamReader()
    rtransport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(master), "rb", buffering=0)
    )
    wtransport, _ = await loop.connect_write_pipe(
        asyncio.Protocol, os.fdopen(os.dup(master), "wb", buffering=0)
    )
    return TtyProcess(proc, master, reader, rtransport, wtransport)

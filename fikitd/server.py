"""The Unix socket server: framing, peer identity, limits; no knowledge of what ops mean.

The daemon runs as root and anyone on the host may connect, so a connection is held to a
line size, an idle time and a reply backlog; whatever one client does (send garbage, stop
reading, hang) costs only that client its connection, never another client its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import log, protocol
from .clients import Client, Peer
from .protocol import ProtocolError, Request

LOG = log.get("server")

IDLE_TIMEOUT_S = 600.0  # a connection with nothing registered on it
WRITE_BACKLOG = 4 * 1024 * 1024  # unread reply bytes before a slow reader is dropped
DRAIN_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 1024


@dataclass
class Connection:
    peer: Peer
    client: Client | None = None  # set once the connection registered a libfikit.so client
    extra: dict[str, Any] = field(default_factory=dict)


Dispatch = Callable[[Request, Connection], dict[str, Any]]
OnClose = Callable[[Connection], None]


def peer_credentials(sock: socket.socket) -> Peer:
    """The kernel's word on who connected (pid, uid, gid at connect time)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class SocketInUse(Exception):
    pass


class Server:
    def __init__(self, path: Path, dispatch: Dispatch, on_close: OnClose) -> None:
        self.path = path
        self.dispatch = dispatch
        self.on_close = on_close
        self.connections: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self.served = 0

    async def start(self) -> None:
        if self.path.exists() or self.path.is_symlink():
            if self._answers():
                raise SocketInUse(f"{self.path} is in use: another fikitd is running")
            self.path.unlink()  # stale, from a daemon that died
        self._server = await asyncio.start_unix_server(
            self._handle, path=str(self.path), limit=protocol.MAX_MESSAGE, backlog=128
        )
        os.chmod(self.path, 0o666)  # any user may talk to us; what they may do is decided per op

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(str(self.path))
                return True
            except OSError:
                return False

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self.connections):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if len(self.connections) >= MAX_CONNECTIONS:
            writer.close()
            return
        try:
            peer = peer_credentials(sock)
        except OSError:
            writer.close()
            return
        conn = Connection(peer)
        self.connections.add(writer)
        try:
            await self._serve(conn, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError):
            pass
        except Exception:
            LOG.exception("connection from pid %d failed", peer.pid)
        finally:
            self.connections.discard(writer)
            try:
                self.on_close(conn)
            except Exception:
                LOG.exception("cleanup after pid %d failed", peer.pid)
            writer.close()

    async def _serve(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            timeout = None if conn.client is not None else IDLE_TIMEOUT_S
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
            except asyncio.IncompleteReadError:
                return  # EOF (a partial last line is discarded: it was never a complete request)
            except asyncio.LimitOverrunError:
                await self._reply(writer, protocol.error(
                    "too_large", f"a request is at most {protocol.MAX_MESSAGE} bytes; closing"))
                return
            except asyncio.TimeoutError:
                return
            if not line.strip():
                continue
            reply = self._answer(conn, line)
            if not await self._reply(writer, reply):
                return

    def _answer(self, conn: Connection, line: bytes) -> dict[str, Any]:
        self.served += 1
        try:
            req = protocol.decode(line)
        except ProtocolError as exc:
            return protocol.error(exc.code, exc.message, protocol.peek_id(line))
        try:
            return protocol.ok(self.dispatch(req, conn), req.id)
        except ProtocolError as exc:
            return protocol.error(exc.code, exc.message, req.id)
        except Exception as exc:
            LOG.exception("op %s from pid %d failed", req.op, conn.peer.pid)
            return protocol.error("internal", f"{type(exc).__name__}: {exc}"[:300], req.id)

    async def _reply(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> bool:
        writer.write(protocol.encode(reply))
        if writer.transport.get_write_buffer_size() > WRITE_BACKLOG:
            LOG.warning("dropping a client that does not read its replies")
            return False
        try:
            await asyncio.wait_for(writer.drain(), DRAIN_TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError):
            return False
        return True

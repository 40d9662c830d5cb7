"""The async client's Unix-socket I/O, on asyncio's own streams.

httpx reaches a Unix socket through anyio. anyio 3.6 (Debian 12's
python3-anyio 3.6.2) has a bug there: its UNIX socket stream resends the
*start* of a buffer after a partial send (``send(item)`` where it means
``send(view)``), so any body larger than the socket buffer arrives
corrupted — silently, since the length is right. This backend writes with
asyncio's StreamWriter, which handles partial writes, and is used for every
Unix-socket connection of the async client.
"""
from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from typing import Any, Optional

import httpcore

try:  # httpcore >= 0.17 exports the interfaces
    from httpcore import AsyncNetworkBackend, AsyncNetworkStream  # type: ignore[attr-defined]
except ImportError:  # httpcore 0.16 (Debian 12)
    from httpcore.backends.base import AsyncNetworkBackend, AsyncNetworkStream  # type: ignore[no-redef]


class _UnixStream(AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._r, self._w = reader, writer

    async def read(self, max_bytes: int, timeout: Optional[float] = None) -> bytes:
        try:
            return await asyncio.wait_for(self._r.read(max_bytes), timeout)
        except asyncio.TimeoutError as e:
            raise httpcore.ReadTimeout(str(e)) from e
        except OSError as e:
            raise httpcore.ReadError(str(e)) from e

    async def write(self, buffer: bytes, timeout: Optional[float] = None) -> None:
        if not buffer:
            return
        try:
            self._w.write(buffer)
            await asyncio.wait_for(self._w.drain(), timeout)
        except asyncio.TimeoutError as e:
            raise httpcore.WriteTimeout(str(e)) from e
        except OSError as e:
            raise httpcore.WriteError(str(e)) from e

    async def aclose(self) -> None:
        self._w.close()
        with contextlib.suppress(OSError):
            await self._w.wait_closed()

    def get_extra_info(self, info: str) -> Any:
        sock: Optional[socket.socket] = self._w.get_extra_info("socket")
        if info == "socket":
            return sock
        if info == "is_readable":
            # httpcore asks before reusing a kept-alive connection: readable
            # there means the server closed it (or sent something unasked).
            if sock is None or sock.fileno() < 0:
                return True
            return bool(select.select([sock], [], [], 0)[0])
        return None


class UnixBackend(AsyncNetworkBackend):
    async def connect_unix_socket(self, path: str, timeout: Optional[float] = None) -> AsyncNetworkStream:
        try:
            r, w = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=1 << 20), timeout)
        except asyncio.TimeoutError as e:
            raise httpcore.ConnectTimeout(str(e)) from e
        except OSError as e:
            raise httpcore.ConnectError(str(e)) from e
        return _UnixStream(r, w)

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> AsyncNetworkStream:
        raise httpcore.ConnectError("this backend only connects to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def unix_transport(path: str, limits: Any) -> Any:
    """An httpx transport to `path` whose connections use UnixBackend."""
    import httpx
    transport = httpx.AsyncHTTPTransport(uds=path, limits=limits)
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError("this httpx has no replaceable network backend; cubby's SDK needs httpx 0.23-0.27")
    pool._network_backend = UnixBackend()
    return transport

"""The async client's request/response transport: h11 (the HTTP/1.1 state
machine httpcore itself is built on) over asyncio streams.

Why not httpx for these: httpx spends about 1 ms of CPU on a blocking exec
of ``true`` (URL models, anyio checkpoints, a dozen event-loop turns), more
than the whole in-process ``Runtime::exec``. Here a call is one write and
the reads its answer needs. Streams (ndjson, downloads) stay on httpx;
WebSockets on websockets.

One request = one connection taken from a small pool, so concurrent calls
each have their own. Bodies are bytes, or an async iterator of bytes (sent
chunked).
"""
from __future__ import annotations

import asyncio
import json
import ssl
import urllib.parse
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple, Union

import h11

from ._sync_http import answer_error
from .errors import ConnectionFailed

_MAX_IDLE = 32
_READ = 1 << 16

Body = Union[None, bytes, AsyncIterator[bytes]]


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    def reusable(self) -> bool:
        # A kept-alive connection the server closed meanwhile reads EOF.
        return self.h11.our_state is h11.IDLE and not self.r.at_eof() and not self.w.is_closing()

    def close(self) -> None:
        self.w.close()


class AsyncTransport:
    """Requests to one server (as _sync_http.SyncTransport, awaited)."""

    def __init__(self, *, sock: Optional[str], base: str, token: Optional[str],
                 ssl_context: Optional[ssl.SSLContext], request_timeout: float,
                 on_connect_refused: Optional[Callable[[], Awaitable[None]]]) -> None:
        self._sock = sock
        self._request_timeout = request_timeout
        self._on_refused = on_connect_refused
        parsed = urllib.parse.urlparse(base)
        self._prefix = parsed.path.rstrip("/")
        self._host = parsed.hostname or "cubby"
        self._https = parsed.scheme == "https"
        self._port = parsed.port or (443 if self._https else 80)
        self._ssl = ssl_context
        self._headers: List[Tuple[str, str]] = [("Host", parsed.netloc or "cubby")]
        if token:
            self._headers.append(("Authorization", f"Bearer {token}"))
        self._idle: List[_Conn] = []
        self._where = sock or base

    async def _connect(self) -> _Conn:
        if self._sock is not None:
            r, w = await asyncio.open_unix_connection(self._sock, limit=1 << 20)
        else:
            ctx = (self._ssl or ssl.create_default_context()) if self._https else None
            r, w = await asyncio.open_connection(self._host, self._port, ssl=ctx, limit=1 << 20)
        return _Conn(r, w)

    def _take(self) -> Optional[_Conn]:
        while self._idle:
            c = self._idle.pop()
            if c.reusable():
                return c
            c.close()
        return None

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    async def request(self, method: str, path: str, **kw: Any) -> bytes:
        """One call's answer; raises the envelope's error for a non-2xx one."""
        status, _, data = await self.exchange(method, path, **kw)
        if status >= 400:
            raise answer_error(status, data)
        return data

    async def exchange(self, method: str, path: str, *, params: Optional[Dict[str, Any]] = None, body: Any = None,
                       content: Body = None, headers: Optional[Dict[str, str]] = None,
                       read_timeout: Optional[float]) -> Tuple[int, str, bytes]:
        """One call: (status, content type, body), whatever the status.
        `read_timeout` bounds the wait for the answer once the request is
        sent (None: no bound). A connection that cannot be made is retried
        once after `on_connect_refused` (the local server's auto-start)."""
        target = self._prefix + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        hdrs = list(self._headers)
        if headers:
            hdrs.extend(headers.items())
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            hdrs.append(("Content-Type", "application/json"))
        if isinstance(content, (bytes, bytearray, memoryview)):
            hdrs.append(("Content-Length", str(len(content))))
        elif content is not None:
            hdrs.append(("Transfer-Encoding", "chunked"))
        else:
            hdrs.append(("Content-Length", "0"))
        conn = self._take()
        for attempt in (0, 1):
            if conn is not None:
                break
            try:
                async with asyncio.timeout(self._request_timeout):
                    conn = await self._connect()
            except (ConnectionRefusedError, FileNotFoundError) as e:
                if attempt == 0 and self._on_refused is not None:
                    await self._on_refused()
                    continue
                raise ConnectionFailed(f"cannot reach the cubby server at {self._where}: {e}") from e
            except (OSError, TimeoutError) as e:
                raise ConnectionFailed(f"cannot reach the cubby server at {self._where}: {e}") from e
        assert conn is not None
        try:
            return await self._exchange(conn, method, target, hdrs, content, read_timeout)
        except TimeoutError as e:
            conn.close()
            raise ConnectionFailed(f"{method} {path}: no answer within the request timeout") from e
        except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as e:
            conn.close()
            raise ConnectionFailed(f"{method} {path}: {e}") from e
        except BaseException:
            conn.close()  # cancelled mid-exchange: the connection is in an unknown state
            raise

    async def _write(self, conn: _Conn, data: bytes) -> None:
        async with asyncio.timeout(self._request_timeout):
            conn.w.write(data)
            await conn.w.drain()

    async def _exchange(self, conn: _Conn, method: str, target: str, hdrs: List[Tuple[str, str]], content: Body,
                         read_timeout: Optional[float]) -> Tuple[int, str, bytes]:
        h = conn.h11
        head = h.send(h11.Request(method=method, target=target, headers=hdrs))
        if content is None or isinstance(content, (bytes, bytearray, memoryview)):
            await self._write(conn, head + (h.send(h11.Data(data=bytes(content))) if content else b"") +
                              h.send(h11.EndOfMessage()))
        else:  # chunked: each piece has the request timeout to go out
            await self._write(conn, head)
            async for chunk in content:
                if chunk:
                    await self._write(conn, h.send(h11.Data(data=chunk)))
            await self._write(conn, h.send(h11.EndOfMessage()))
        status, ctype, parts = 0, "", []
        async with asyncio.timeout(read_timeout):
            while True:
                ev = h.next_event()
                if ev is h11.NEED_DATA:
                    h.receive_data(await conn.r.read(_READ))
                elif isinstance(ev, h11.Response):
                    status = ev.status_code
                    ctype = next((v.decode() for k, v in ev.headers if k == b"content-type"), "")
                elif isinstance(ev, h11.Data):
                    parts.append(ev.data)
                elif isinstance(ev, h11.EndOfMessage):
                    break
                elif isinstance(ev, h11.ConnectionClosed):
                    raise ConnectionResetError("the server closed the connection mid-answer")
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            if len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        return status, ctype, b"".join(parts)

"""The synchronous client's request/response transport, on the standard
library's ``http.client``.

Why not httpx here: a blocking ``exec`` of ``true`` is the SDK's hot path,
and httpx spends about 1 ms of CPU per call on it (URL models, anyio
checkpoints, a dozen event-loop turns), more than the whole in-process
``Runtime::exec``. ``http.client`` on a kept-alive connection costs about
0.2 ms, and it runs in the calling thread, so a sync call no longer hops to
the client's loop thread and back. Streams (ndjson, WebSocket attach,
tar uploads and downloads) stay on the asyncio client.

One request = one connection taken from a small pool (a thread-safe list),
so many threads call at once, each on its own connection.
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

from .errors import ConnectionFailed, from_envelope

_MAX_IDLE = 32  # kept-alive connections kept for reuse


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("cubby", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def answer_error(status: int, data: bytes) -> Exception:
    """The typed error of a non-2xx answer (its envelope, if it has one)."""
    try:
        parsed: Any = json.loads(data)
    except ValueError:
        parsed = data.decode(errors="replace")
    return from_envelope(status, parsed)


class SyncTransport:
    """Blocking requests to one server."""

    def __init__(self, *, sock: Optional[str], base: str, token: Optional[str],
                 ssl_context: Optional[ssl.SSLContext], request_timeout: float,
                 on_connect_refused: Optional[Callable[[], None]]) -> None:
        self._sock = sock
        self._request_timeout = request_timeout
        self._on_refused = on_connect_refused
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        parsed = urllib.parse.urlparse(base)
        self._prefix = parsed.path.rstrip("/")
        self._host, self._port, self._https = parsed.hostname or "cubby", parsed.port, parsed.scheme == "https"
        self._ssl = ssl_context
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._where = sock or base

    def _new(self) -> http.client.HTTPConnection:
        if self._sock is not None:
            return _UnixConnection(self._sock, self._request_timeout)
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._request_timeout,
                                               context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._request_timeout)

    def _take(self) -> http.client.HTTPConnection:
        """A kept-alive connection, or a new one. A kept-alive one the server
        has closed (readable with nothing asked: EOF) is dropped, as httpcore
        does, so a request is not written into a dead connection."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._new()
            if conn.sock is not None and not select.select([conn.sock], [], [], 0)[0]:
                return conn
            conn.close()

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def request(self, method: str, path: str, **kw: Any) -> bytes:
        """One call's answer; raises the envelope's error for a non-2xx one."""
        status, _, data = self.exchange(method, path, **kw)
        if status >= 400:
            raise answer_error(status, data)
        return data

    def exchange(self, method: str, path: str, *, params: Optional[Dict[str, Any]] = None, body: Any = None,
                 content: Optional[bytes] = None, headers: Optional[Dict[str, str]] = None,
                 read_timeout: Optional[float]) -> Tuple[int, str, bytes]:
        """One call: (status, content type, body), whatever the status.

        `read_timeout` bounds the wait for the answer once the request is
        sent (None: no bound, for calls that wait on a process). A
        connection that cannot be made is retried once after
        `on_connect_refused` (the local server's auto-start)."""
        target = self._prefix + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        hdrs = dict(self._headers)
        if headers:
            hdrs.update(headers)
        payload: Optional[bytes] = content
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            hdrs["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn = self._take()
            try:
                if conn.sock is None:
                    conn.connect()
            except (ConnectionRefusedError, FileNotFoundError) as e:
                conn.close()
                if attempt == 0 and self._on_refused is not None:
                    self._on_refused()
                    continue
                raise ConnectionFailed(f"cannot reach the cubby server at {self._where}: {e}") from e
            except OSError as e:
                conn.close()
                raise ConnectionFailed(f"cannot reach the cubby server at {self._where}: {e}") from e
            try:
                conn.sock.settimeout(self._request_timeout)
                conn.request(method, target, body=payload, headers=hdrs)
                conn.sock.settimeout(read_timeout)
                resp = conn.getresponse()
                data = resp.read()
            except socket.timeout as e:
                conn.close()
                raise ConnectionFailed(f"{method} {path}: no answer within the request timeout") from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise ConnectionFailed(f"{method} {path}: {e}") from e
            if resp.will_close:
                conn.close()
            else:
                self._give_back(conn)
            return resp.status, resp.getheader("Content-Type", ""), data
        raise AssertionError("unreachable")

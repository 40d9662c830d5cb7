"""The asyncio client: every operation of the API, implemented once.

The synchronous :class:`cubby.Client` runs this client on an event loop of
its own (``client.py``), so both have the same methods and behaviour.

Two timeouts, named for what they bound:

* ``request_timeout`` (seconds, per client): one API call — connecting,
  sending, and waiting for the answer of a call that does not wait on a
  process. Calls that wait on a box or a process (``exec``, ``wait``, a
  followed log) add the process's own bound to it, or have none.
* ``timeout`` (seconds, per exec): the process. When it expires the process
  is killed and the result's ``status`` is ``"timed_out"``; that is a
  result, not an exception.
"""
from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import datetime
import json
import os
import ssl
import tarfile
import tempfile
import threading
import urllib.parse
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Union

import httpx
import websockets
import websockets.exceptions

from . import _async_http, _local, _sync_http, _uds
from .errors import (ConnectionFailed, CubbyError, ExecTimeout, BadRequest, from_envelope)
from .types import BoxInfo, ExecResult, LogChunk, Logs
from ._tarsafe import extract_tar

# Kubernetes' remotecommand v5 channels (api.md).
CH_STDIN, CH_STDOUT, CH_STDERR, CH_STATUS, CH_RESIZE, CH_CLOSE = 0, 1, 2, 3, 4, 255
WS_SUBPROTOCOL = "v5.channel.k8s.io"

OutputCallback = Callable[[str], Union[None, Awaitable[None]]]
Stdin = Union[None, str, bytes]
Command = Union[str, Sequence[str]]
LogTime = Union[None, int, float, datetime.datetime]

# The options `create` passes through; each is one of `cubby run`'s.
_CREATE_OPTIONS = ("name", "cmd", "entrypoint", "env", "publish", "volumes", "cwd", "user", "hostname",
                   "network", "isolation", "userns", "memory", "cpus", "pids", "auto_remove", "start", "pull")


def _argv(cmd: Command, args: Sequence[str]) -> List[str]:
    argv = [cmd] if isinstance(cmd, str) else list(cmd)
    argv.extend(args)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise BadRequest("a command is a non-empty list of strings")
    return argv


def _env_list(env: Union[None, Mapping[str, str], Sequence[str]]) -> Optional[List[str]]:
    if env is None:
        return None
    if isinstance(env, Mapping):
        return [f"{k}={v}" for k, v in env.items()]
    return list(env)


def _unix_time(t: Union[int, float, datetime.datetime]) -> str:
    """A logs since/until bound as the API takes it: Unix seconds, with up
    to nine decimals (a naive datetime is local time, as Python's own)."""
    secs = t.timestamp() if isinstance(t, datetime.datetime) else float(t)
    if secs < 0:
        raise BadRequest("a logs time bound cannot be before 1970")
    return f"{secs:.9f}".rstrip("0").rstrip(".")


def _bytes(data: Union[str, bytes]) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


class _StreamDecoder:
    """Feeds a callback text decoded incrementally, so a UTF-8 sequence split
    across two chunks is not turned into two replacement characters."""

    def __init__(self, callback: Optional[OutputCallback]) -> None:
        self._callback = callback
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def feed(self, data: bytes, final: bool = False) -> None:
        if self._callback is None:
            return
        text = self._decoder.decode(data, final)
        if text:
            r = self._callback(text)
            if asyncio.iscoroutine(r):
                await r


class AsyncClient:
    """A connection to a cubby server.

    ``AsyncClient()`` talks to the local home's server (``$CUBBY_HOME`` or
    the default home; pass ``home=``), starting one if none is running.
    ``AsyncClient("https://host:8443", token)`` talks to a remote one
    (``http://`` for plain TCP; ``unix:///path/to/cubby.sock`` for a given
    socket).
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, *, home: Optional[str] = None,
                 request_timeout: float = 30.0, auto_start: bool = True,
                 idle_exit: int = _local.DEFAULT_IDLE_EXIT, verify: Union[bool, str, ssl.SSLContext] = True) -> None:
        self.request_timeout = request_timeout
        self._token = token
        self._auto_start_home: Optional[str] = None
        self._idle_exit = idle_exit
        # The pool allows many concurrent calls: 64 execs on one box from one
        # client is a case the tests run. (A transport takes its own limits;
        # the client's would apply only to a default transport.)
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=32)
        if url is None or url.startswith("unix://"):
            if url is None:
                home = home or _local.default_home()
                self._sock: Optional[str] = os.path.join(home, "cubby.sock")
                if auto_start:
                    self._auto_start_home = home
            else:
                self._sock = url[len("unix://"):]
            self._base = "http://cubby"
            self._ws_base = "ws://cubby"
            transport = _uds.unix_transport(self._sock, limits)
        else:
            parsed = urllib.parse.urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise BadRequest(f"unsupported server URL {url!r} (want http://, https:// or unix://)")
            self._sock = None
            self._base = url.rstrip("/")
            self._ws_base = ("wss://" if parsed.scheme == "https" else "ws://") + parsed.netloc
            transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else None
        if self._ssl is None and self._ws_base.startswith("wss://"):
            self._ssl = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(transport=transport, base_url=self._base, headers=headers,
                                       timeout=request_timeout)
        self.images = AsyncImages(self)
        self.snapshots = AsyncSnapshots(self)
        self._started_lock = asyncio.Lock()
        # Whole-answer calls go through h11 on asyncio streams, streams
        # through httpx (_async_http.py says why).
        self._requests = _async_http.AsyncTransport(
            sock=self._sock, base=self._base, token=token, ssl_context=self._tls_context(),
            request_timeout=request_timeout,
            on_connect_refused=self._ensure_server if self._auto_start_home is not None else None)
        # Set by the sync Client: its calls drive these coroutines in the
        # caller's thread with no loop running, and then `_content` uses this
        # blocking transport instead of httpx (client.py says why).
        self._blocking: Optional[_sync_http.SyncTransport] = None
        self._blocking_start_lock = threading.Lock()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()
        self._requests.close()
        if self._blocking is not None:
            self._blocking.close()

    def _tls_context(self) -> Optional[ssl.SSLContext]:
        """The TLS settings of `verify`, for an https:// server (None otherwise)."""
        if not self._base.startswith("https://"):
            return None
        return self._ssl or ssl.create_default_context()

    def _use_blocking_transport(self) -> None:
        """Gives this client the sync Client's blocking transport (same
        server, token, TLS settings and request timeout)."""
        def start_server() -> None:
            if self._auto_start_home is not None and self._sock is not None:
                with self._blocking_start_lock:
                    _local.ensure_server(self._auto_start_home, self._sock, self._idle_exit)
        self._blocking = _sync_http.SyncTransport(
            sock=self._sock, base=self._base, token=self._token, ssl_context=self._tls_context(),
            request_timeout=self.request_timeout,
            on_connect_refused=start_server if self._auto_start_home is not None else None)

    # -- plumbing ----------------------------------------------------------

    async def _ensure_server(self) -> None:
        if self._auto_start_home is None or self._sock is None:
            return
        async with self._started_lock:
            await asyncio.to_thread(_local.ensure_server, self._auto_start_home, self._sock, self._idle_exit)

    async def _send(self, method: str, path: str, *, params: Optional[Dict[str, Any]] = None, body: Any = None,
                    content: Any = None, headers: Optional[Dict[str, str]] = None,
                    wait: Optional[float] = None, no_read_timeout: bool = False, stream: bool = False) -> httpx.Response:
        """One request; raises the envelope's error for a non-2xx answer.

        A connection that cannot be made is retried once after (re)starting
        the local server: an auto-started server exits when idle, and nothing
        was sent on a connection that was never made.
        """
        timeout = httpx.Timeout(self.request_timeout, read=self._read_timeout(wait, no_read_timeout))
        req = self._http.build_request(method, path, params=params, json=body, content=content, headers=headers,
                                       timeout=timeout)
        for attempt in (0, 1):
            try:
                resp = await self._http.send(req, stream=stream)
                break
            except httpx.ConnectError as e:
                if attempt == 0 and self._auto_start_home is not None:
                    await self._ensure_server()
                    continue
                raise ConnectionFailed(f"cannot reach the cubby server at {self._sock or self._base}: {e}") from e
            except httpx.TimeoutException as e:
                raise ConnectionFailed(f"{method} {path}: no answer within the request timeout") from e
            except httpx.TransportError as e:
                raise ConnectionFailed(f"{method} {path}: {e}") from e
        if resp.status_code >= 400:
            raw = await resp.aread() if stream else resp.content
            if stream:
                await resp.aclose()
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            raise from_envelope(resp.status_code, parsed)
        return resp

    def _read_timeout(self, wait: Optional[float], no_read_timeout: bool) -> Optional[float]:
        if no_read_timeout:
            return None
        return self.request_timeout + (wait or 0)

    async def _content(self, method: str, path: str, *, wait: Optional[float] = None,
                       no_read_timeout: bool = False, **kw: Any) -> bytes:
        """One request's whole answer; raises the envelope's error for a non-2xx one."""
        if self._blocking is not None and not _loop_running():
            return self._blocking.request(method, path, read_timeout=self._read_timeout(wait, no_read_timeout), **kw)
        return await self._requests.request(method, path, read_timeout=self._read_timeout(wait, no_read_timeout), **kw)

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        raw = await self._content(method, path, **kw)
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as e:
            raise CubbyError(f"{method} {path}: the server sent something that is not JSON") from e

    async def _ndjson(self, method: str, path: str, **kw: Any) -> AsyncIterator[Dict[str, Any]]:
        """The lines of a streamed ndjson answer, as they arrive."""
        resp = await self._send(method, path, stream=True, no_read_timeout=True, **kw)
        try:
            async for line in resp.aiter_lines():
                if line.strip():
                    yield json.loads(line)
        except httpx.TransportError as e:
            raise ConnectionFailed(f"{method} {path}: the stream broke: {e}") from e
        finally:
            await resp.aclose()

    async def _websocket(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        uri = self._ws_base + path
        opts: Dict[str, Any] = dict(subprotocols=[WS_SUBPROTOCOL], extra_headers=headers,
                                    open_timeout=self.request_timeout, max_size=16 << 20, ping_interval=None)
        for attempt in (0, 1):
            try:
                if self._sock is not None:
                    return await websockets.unix_connect(self._sock, uri, **opts)
                return await websockets.connect(uri, ssl=self._ssl, **opts)
            except (OSError, asyncio.TimeoutError) as e:
                if attempt == 0 and self._auto_start_home is not None:
                    await self._ensure_server()
                    continue
                raise ConnectionFailed(f"cannot attach: {e}") from e
            except websockets.exceptions.InvalidStatusCode as e:
                raise from_envelope(e.status_code, {}) from e
            except (websockets.exceptions.WebSocketException, EOFError) as e:
                # A server that dies mid-handshake (its socket still
                # accepted): no valid answer, the same failure to the caller.
                raise ConnectionFailed(f"cannot attach: {e}") from e
        raise AssertionError("unreachable")

    # -- the API -------------------------------------------------------------

    async def info(self) -> Dict[str, Any]:
        """The server's host and home (`cubby info`)."""
        return await self._json("GET", "/v1/info")

    async def version(self) -> str:
        return (await self._json("GET", "/v1/version"))["version"]

    async def create(self, image: str, **options: Any) -> "AsyncBox":
        """Creates and (unless ``start=False``) starts a box of `image`, detached.

        Options are `cubby run`'s: name, cmd, entrypoint, env (dict or
        "K=V" list), publish, volumes, cwd, user, hostname, network,
        isolation, userns, memory (bytes), cpus, pids, auto_remove, pull
        ("missing", the default, pulls an image not in the store; "never";
        "always").
        Without a ``cmd`` the image's own runs; give e.g.
        ``cmd=["sleep", "infinity"]`` for a box you exec into.
        """
        unknown = set(options) - set(_CREATE_OPTIONS)
        if unknown:
            raise BadRequest(f"unknown create option(s): {', '.join(sorted(unknown))}")
        body: Dict[str, Any] = {"image": image}
        for k, v in options.items():
            if v is not None:
                body[k] = _env_list(v) if k == "env" else v
        info = await self._json("POST", "/v1/boxes", body=body)
        return AsyncBox(self, info)

    @contextlib.asynccontextmanager
    async def box(self, image: str, **options: Any) -> AsyncIterator["AsyncBox"]:
        """``async with client.box(image) as box:`` — the box is removed
        (forcibly) when the block ends, however it ends."""
        b = await self.create(image, **options)
        try:
            yield b
        finally:
            with contextlib.suppress(CubbyError):
                await b.remove(force=True)

    async def get(self, ref: str) -> "AsyncBox":
        """The box with this id, id prefix or name."""
        return AsyncBox(self, await self._json("GET", f"/v1/boxes/{_q(ref)}"))

    async def list(self) -> List["AsyncBox"]:
        """Every box of the home, in any state."""
        return [AsyncBox(self, b) for b in await self._json("GET", "/v1/boxes")]

    async def events(self) -> AsyncIterator[Dict[str, Any]]:
        """Box and image events of the home, as they happen (runs until closed)."""
        async for e in self._ndjson("GET", "/v1/events"):
            yield e


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class AsyncBox:
    """A box on the server. Its methods act on the live box; ``info`` is the
    record as last seen (``await box.refresh()`` reads it again)."""

    def __init__(self, client: AsyncClient, info: Dict[str, Any]) -> None:
        self._c = client
        self.info = BoxInfo(info)
        self.id: str = info["id"]
        self.name: str = info.get("name") or ""
        self.files = AsyncFiles(self)

    def __repr__(self) -> str:
        return f"<Box {self.id[:12]} {self.name} {self.info.status}>"

    @property
    def _path(self) -> str:
        return f"/v1/boxes/{_q(self.id)}"

    async def refresh(self) -> BoxInfo:
        self.info = BoxInfo(await self._c._json("GET", self._path))
        return self.info

    async def start(self) -> None:
        self.info = BoxInfo(await self._c._json("POST", self._path + "/start"))

    async def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds (as `cubby stop -t`)."""
        self.info = BoxInfo(await self._c._json("POST", self._path + "/stop", params={"timeout": int(timeout)},
                                                wait=timeout + 5))

    async def kill(self, signal: Union[str, int] = "KILL") -> None:
        await self._c._json("POST", self._path + "/kill", params={"signal": str(signal)})

    async def pause(self) -> None:
        """Stops the box's processes (a vm box: its vCPUs), memory kept (``cubby pause``).
        An exec into a paused box is refused (409); stop and a SIGKILL end it."""
        self.info = BoxInfo(await self._c._json("POST", self._path + "/pause"))

    async def unpause(self) -> None:
        self.info = BoxInfo(await self._c._json("POST", self._path + "/unpause"))

    async def snapshot(self, name: Optional[str] = None) -> Dict[str, Any]:
        """Saves this running vm box as it is (its processes' memory, devices,
        disk); the box runs on (``cubby snapshot``). Returns the snapshot;
        ``client.snapshots.run()`` starts boxes from it."""
        return await self._c._json("POST", self._path + "/snapshot", params={"name": name} if name else None, wait=300)

    async def fork(self, count: int = 1) -> List["AsyncBox"]:
        """`count` running copies of this vm box, each with its own disk and
        identity, its processes going on from now (``cubby fork``)."""
        boxes = await self._c._json("POST", self._path + "/fork", params={"count": int(count)}, wait=300)
        return [AsyncBox(self._c, b) for b in boxes]

    async def remove(self, force: bool = False) -> None:
        await self._c._json("DELETE", self._path, params={"force": "true" if force else "false"}, wait=15)

    async def wait(self, timeout: Optional[float] = None) -> BoxInfo:
        """Until the box is no longer running; its record (``exit_code``).
        `timeout` bounds the wait (None: no bound)."""
        if timeout is None:
            self.info = BoxInfo(await self._c._json("POST", self._path + "/wait", no_read_timeout=True))
        else:
            self.info = BoxInfo(await self._c._json("POST", self._path + "/wait", wait=timeout))
        return self.info

    async def ports(self) -> List[Dict[str, Any]]:
        return await self._c._json("GET", self._path + "/ports")

    async def stats(self) -> Dict[str, Any]:
        """One sample: CPU time, memory, pids and I/O of the box's cgroup."""
        return await self._c._json("GET", self._path + "/stats", params={"stream": "false"})

    async def stream_stats(self) -> AsyncIterator[Dict[str, Any]]:
        """A sample a second until the box ends."""
        async for s in self._c._ndjson("GET", self._path + "/stats", params={"stream": "true"}):
            yield s

    async def logs(self, *, stdout: bool = True, stderr: bool = True, tail: Optional[int] = None,
                   since: LogTime = None, until: LogTime = None, timestamps: bool = False) -> Logs:
        """The box's output so far; `tail`, `since`, `until` and
        `timestamps` as for :meth:`follow_logs`."""
        out, err = bytearray(), bytearray()
        async for chunk in self.follow_logs(follow=False, stdout=stdout, stderr=stderr, tail=tail, since=since,
                                            until=until, timestamps=timestamps):
            (out if chunk.stream == "stdout" else err).extend(chunk.data)
        return Logs(bytes(out), bytes(err))

    async def follow_logs(self, *, follow: bool = True, stdout: bool = True, stderr: bool = True,
                          tail: Optional[int] = None, since: LogTime = None, until: LogTime = None,
                          timestamps: bool = False) -> AsyncIterator[LogChunk]:
        """The output as it is written, until the box ends (or, with
        follow=False, what there is now). As ``cubby logs``: `tail` only the
        last N lines of what is there; `since`/`until` (a Unix time in
        seconds or a datetime) only lines written in [since, until);
        `timestamps` each line prefixed with its RFC 3339 time."""
        params = {"follow": str(follow).lower(), "stdout": str(stdout).lower(), "stderr": str(stderr).lower(),
                  "timestamps": str(timestamps).lower()}
        if tail is not None:
            params["tail"] = str(int(tail))
        for name, t in (("since", since), ("until", until)):
            if t is not None:
                params[name] = _unix_time(t)
        async for line in self._c._ndjson("GET", self._path + "/logs", params=params):
            yield LogChunk(line["stream"], base64.b64decode(line["data"]))

    async def exec(self, cmd: Command, *args: str, env: Union[None, Mapping[str, str], Sequence[str]] = None,
                   cwd: Optional[str] = None, user: Optional[str] = None, stdin: Stdin = None,
                   timeout: Optional[float] = None, on_stdout: Optional[OutputCallback] = None,
                   on_stderr: Optional[OutputCallback] = None,
                   max_output_bytes: Optional[int] = None) -> ExecResult:
        """Runs a command in the box and returns how it ended and its output.

        `stdin` (str or bytes) is the process's whole input. `timeout`
        (seconds) bounds the process: past it, it is killed and the result's
        status is "timed_out". With `on_stdout`/`on_stderr` the output is
        also delivered as it is written (text, in order, each stream decoded
        incrementally); callbacks may be coroutines.
        """
        argv = _argv(cmd, args)
        if on_stdout is None and on_stderr is None:
            body: Dict[str, Any] = {"cmd": argv, "encoding": "base64", **_process_fields(env, cwd, user, timeout)}
            if stdin is not None:
                body["stdin"] = base64.b64encode(_bytes(stdin)).decode()
            if max_output_bytes is not None:
                body["max_output_bytes"] = max_output_bytes
            r = await self._c._json("POST", self._path + "/exec", body=body,
                                    wait=None if timeout is None else timeout + 5,
                                    no_read_timeout=timeout is None)
            return _exec_result(r, base64.b64decode(r.get("stdout") or ""), base64.b64decode(r.get("stderr") or ""))
        stream = await self.exec_stream(argv, env=env, cwd=cwd, user=user, stdin=stdin is not None,
                                        timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr)
        try:
            if stdin is not None:
                await stream.write_stdin(_bytes(stdin))
                await stream.close_stdin()
            return await stream.wait()
        finally:
            await stream.close()

    async def exec_stream(self, cmd: Command, *args: str, env: Union[None, Mapping[str, str], Sequence[str]] = None,
                          cwd: Optional[str] = None, user: Optional[str] = None, stdin: bool = False,
                          tty: bool = False, timeout: Optional[float] = None,
                          on_stdout: Optional[OutputCallback] = None,
                          on_stderr: Optional[OutputCallback] = None) -> "AsyncExecStream":
        """Starts a command and returns a handle to stream it: ``write_stdin``,
        ``close_stdin``, ``resize`` (tty), ``kill``, ``wait``, ``close``.
        Output is kept in the handle (and given to the callbacks) as it
        arrives; if the connection drops, the handle re-attaches and gets
        what it missed."""
        body: Dict[str, Any] = {"cmd": _argv(cmd, args), "tty": tty, "stdin": stdin,
                                **_process_fields(env, cwd, user, timeout)}
        created = await self._c._json("POST", self._path + "/execs", body=body)
        s = AsyncExecStream(self, created["id"], on_stdout, on_stderr)
        await s._attach()
        return s


def _process_fields(env: Union[None, Mapping[str, str], Sequence[str]], cwd: Optional[str], user: Optional[str],
                    timeout: Optional[float]) -> Dict[str, Any]:
    """The request fields of an exec's process, both forms alike (api.md)."""
    fields: Dict[str, Any] = {}
    if env is not None:
        fields["env"] = _env_list(env)
    if cwd:
        fields["cwd"] = cwd
    if user:
        fields["user"] = user
    if timeout is not None:
        fields["timeout_ms"] = max(1, int(timeout * 1000))
    return fields


def _exec_result(r: Dict[str, Any], out: bytes, err: bytes) -> ExecResult:
    return ExecResult(exit_code=int(r["exit_code"]), status=str(r["status"]), stdout_bytes=out, stderr_bytes=err,
                      duration=float(r.get("duration_ms") or 0) / 1000.0, signal=r.get("signal"),
                      stdout_truncated=bool(r.get("stdout_truncated")), stderr_truncated=bool(r.get("stderr_truncated")),
                      exec_id=r.get("exec_id", r.get("id")), error=r.get("error"))


class AsyncExecStream:
    """A running exec attached over a WebSocket (Kubernetes' v5 channels)."""

    MAX_REATTACH = 5

    def __init__(self, box: AsyncBox, exec_id: Any, on_stdout: Optional[OutputCallback],
                 on_stderr: Optional[OutputCallback]) -> None:
        self._box = box
        self.id = exec_id
        self._out, self._err = bytearray(), bytearray()
        self._dec = {CH_STDOUT: _StreamDecoder(on_stdout), CH_STDERR: _StreamDecoder(on_stderr)}
        self._ws: Any = None
        self._reader: Optional[asyncio.Task[None]] = None
        self._done = asyncio.Event()
        self._status: Optional[Dict[str, Any]] = None
        self._failure: Optional[BaseException] = None
        self._send_lock = asyncio.Lock()

    @property
    def _path(self) -> str:
        return f"{self._box._path}/execs/{_q(str(self.id))}"

    @property
    def stdout(self) -> bytes:
        """What the process wrote to stdout so far."""
        return bytes(self._out)

    @property
    def stderr(self) -> bytes:
        return bytes(self._err)

    async def _attach(self) -> None:
        q = urllib.parse.urlencode({"stdout_offset": len(self._out), "stderr_offset": len(self._err)})
        self._ws = await self._box._c._websocket(f"{self._path}/attach?{q}")
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        reattached = 0
        try:
            while True:
                try:
                    async for msg in self._ws:
                        if not isinstance(msg, (bytes, bytearray)) or not msg:
                            continue
                        ch, payload = msg[0], bytes(msg[1:])
                        if ch in (CH_STDOUT, CH_STDERR):
                            (self._out if ch == CH_STDOUT else self._err).extend(payload)
                            await self._dec[ch].feed(payload)
                        elif ch == CH_STATUS:
                            self._status = json.loads(payload)
                            return
                except websockets.exceptions.ConnectionClosed:
                    pass
                # Closed without a status: the connection dropped, not the
                # process. Attach again from the offsets we have.
                reattached += 1
                if reattached > self.MAX_REATTACH:
                    raise ConnectionFailed(f"exec {self.id}: the attach connection kept dropping")
                await self._attach()
        except BaseException as e:  # delivered by wait()
            self._failure = e
        finally:
            for d in self._dec.values():
                with contextlib.suppress(Exception):
                    await d.feed(b"", final=True)
            self._done.set()

    async def _send(self, channel: int, payload: bytes) -> None:
        async with self._send_lock:
            try:
                await self._ws.send(bytes([channel]) + payload)
            except websockets.exceptions.ConnectionClosed as e:
                raise ConnectionFailed(f"exec {self.id}: the attach connection is closed") from e

    async def write_stdin(self, data: Union[str, bytes]) -> None:
        """Sends bytes to the process's stdin (the exec needs stdin=True)."""
        data = _bytes(data)
        for i in range(0, len(data), 1 << 20):
            await self._send(CH_STDIN, data[i:i + (1 << 20)])

    async def close_stdin(self) -> None:
        """EOF on the process's stdin (Ctrl-D for a tty is b"\\x04")."""
        await self._send(CH_CLOSE, bytes([CH_STDIN]))

    async def resize(self, width: int, height: int) -> None:
        """The terminal's new size (tty execs)."""
        await self._send(CH_RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    async def kill(self, signal: Union[str, int] = "KILL") -> None:
        await self._box._c._json("POST", self._path + "/kill", params={"signal": str(signal)})

    async def wait(self, timeout: Optional[float] = None) -> ExecResult:
        """Until the process ends; its result. `timeout` bounds this wait
        only (ExecTimeout; the process runs on)."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError as e:
            raise ExecTimeout(f"exec {self.id} still running after {timeout} s") from e
        if self._failure is not None:
            raise self._failure
        r = await self._box._c._json("GET", self._path)
        return _exec_result(r, bytes(self._out), bytes(self._err))

    async def close(self) -> None:
        """Detaches (the process runs on unless it has ended)."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()


class AsyncFiles:
    """Files in a box: one file's bytes, or a tree as a tar (``cubby cp``'s rules)."""

    def __init__(self, box: AsyncBox) -> None:
        self._box = box

    async def read(self, path: str) -> bytes:
        return await self._box._c._content("GET", self._box._path + "/files", params={"path": path}, wait=60)

    async def write(self, path: str, data: Union[str, bytes], mode: int = 0o644) -> None:
        await self._box._c._json("PUT", self._box._path + "/files", params={"path": path, "mode": f"{mode:04o}"},
                                 content=_bytes(data), headers={"Content-Type": "application/octet-stream"}, wait=60)

    async def upload(self, local_path: str, box_dir: str) -> None:
        """Copies a host file or directory into the box directory `box_dir`
        (as ``cubby cp local_path BOX:box_dir/``)."""
        with tempfile.TemporaryFile() as spool:
            await asyncio.to_thread(_make_tar, local_path, spool)
            spool.seek(0)
            await self._box._c._json("PUT", self._box._path + "/archive", params={"path": box_dir},
                                     content=_file_chunks(spool), headers={"Content-Type": "application/x-tar"},
                                     wait=300)

    async def download(self, box_path: str, local_dir: str) -> None:
        """Copies a box file or directory into the host directory `local_dir`.
        What the box sent is untrusted: nothing lands outside `local_dir`."""
        with tempfile.TemporaryFile() as spool:
            resp = await self._box._c._send("GET", self._box._path + "/archive", params={"path": box_path},
                                            stream=True, no_read_timeout=True)
            try:
                async for chunk in resp.aiter_bytes():
                    spool.write(chunk)
            finally:
                await resp.aclose()
            spool.seek(0)
            await asyncio.to_thread(extract_tar, spool, local_dir)


def _make_tar(local_path: str, out: Any) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(local_path, arcname=os.path.basename(os.path.normpath(local_path)))


async def _file_chunks(f: Any) -> AsyncIterator[bytes]:
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            return
        yield chunk


class AsyncSnapshots:
    """The home's snapshots of running vm boxes (``box.snapshot()``)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self) -> List[Dict[str, Any]]:
        return await self._c._json("GET", "/v1/snapshots")

    async def run(self, ref: str, count: int = 1, name: Optional[str] = None) -> List["AsyncBox"]:
        """Starts `count` boxes restored from the snapshot (``cubby run --from``):
        their processes go on from where they were, each box with its own id,
        hostname, disk copy, RNG and clock."""
        params: Dict[str, Any] = {"count": int(count)}
        if name:
            params["name"] = name
        boxes = await self._c._json("POST", f"/v1/snapshots/{_q(ref)}/run", params=params, wait=300)
        return [AsyncBox(self._c, b) for b in boxes]

    async def remove(self, ref: str) -> None:
        await self._c._json("DELETE", f"/v1/snapshots/{_q(ref)}")


class AsyncImages:
    """The home's images."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self) -> List[Dict[str, Any]]:
        return await self._c._json("GET", "/v1/images")

    async def pull(self, ref: str, on_progress: Optional[Callable[[Dict[str, Any]], Any]] = None) -> Dict[str, Any]:
        """Pulls an image; `on_progress` gets each progress line. Returns the image."""
        async for line in self._c._ndjson("POST", "/v1/images/pull", body={"ref": ref}):
            if "error" in line:
                raise from_envelope(0, line["error"])
            if line.get("status") == "done":
                return line["image"]
            if on_progress is not None:
                r = on_progress(line)
                if asyncio.iscoroutine(r):
                    await r
        raise ConnectionFailed(f"pull {ref}: the progress stream ended without a result")

    async def import_tar(self, path: str, ref: str) -> Dict[str, Any]:
        """Imports a root filesystem tar as image `ref` (as `cubby import`)."""
        with open(path, "rb") as f:
            return await self._c._json("POST", "/v1/images/import", params={"ref": ref}, content=_file_chunks(f),
                                       headers={"Content-Type": "application/x-tar"}, wait=300)

    async def remove(self, ref: str) -> None:
        await self._c._json("DELETE", f"/v1/images/{_q(ref)}")

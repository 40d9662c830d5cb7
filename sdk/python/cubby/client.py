"""The synchronous client: every method is :class:`cubby.aio.AsyncClient`'s
method of the same name, so the two clients cannot drift apart.

Two ways to run one:

* A call that is one request and one answer (exec without callbacks,
  inspect, start, stop, files read/write, ...) runs *inline*: its coroutine
  is driven to completion in the caller's thread with no event loop, and
  with no loop running the async client sends through a blocking
  ``http.client`` transport (``_sync_http.py``), which never suspends. That
  is the SDK's hot path: no thread hop, no httpx (about 1 ms of CPU per
  call on its own, more than the whole in-process exec).
* Streams (attach, callbacks, followed logs, events, pull progress, tar
  upload/download) are awaited on an event loop of the client's own (a
  daemon thread), with httpx and websockets. Output callbacks run there.

Calls from many threads at once run concurrently, each on a connection of
its own (64 execs on one box from 64 threads).
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any, AsyncIterator, Coroutine, Dict, Iterator, List, Optional, TypeVar

from . import aio
from .types import BoxInfo, ExecResult, LogChunk, Logs

T = TypeVar("T")


def _inline(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine that does not suspend (see the module docstring) to
    its end in this thread."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("cubby SDK bug: a call meant to run inline awaited something asynchronous")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cubby-client", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("a cubby.Client call from inside one of its own callbacks would deadlock; "
                               "use AsyncClient for that")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            with contextlib.suppress(Exception):
                self.run(agen.aclose())  # type: ignore[attr-defined]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Client:
    """A connection to a cubby server; see :class:`cubby.aio.AsyncClient` for
    the arguments (`url`, `token`, `home`, `request_timeout`, ...).

    ``Client()`` uses the local home's server, starting one if needed::

        with cubby.Client() as client:
            with client.box("busybox", cmd=["sleep", "infinity"]) as box:
                print(box.exec("echo", "hi").stdout)
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, **options: Any) -> None:
        self._loop = _Loop()
        try:
            self._a = self._loop.run(_construct(url, token, options))
        except BaseException:
            self._loop.close()
            raise
        self._a._use_blocking_transport()
        self.images = Images(self._loop, self._a.images)
        self.snapshots = Snapshots(self._loop, self._a.snapshots)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self._loop.run(self._a.close())
        self._loop.close()

    def info(self) -> Dict[str, Any]:
        return _inline(self._a.info())

    def version(self) -> str:
        return _inline(self._a.version())

    def create(self, image: str, **options: Any) -> "Box":
        return Box(self._loop, _inline(self._a.create(image, **options)))

    @contextlib.contextmanager
    def box(self, image: str, **options: Any) -> Iterator["Box"]:
        """``with client.box(image) as box:`` — removed at the end, however the block ends."""
        b = self.create(image, **options)
        try:
            yield b
        finally:
            with contextlib.suppress(Exception):
                b.remove(force=True)

    def get(self, ref: str) -> "Box":
        return Box(self._loop, _inline(self._a.get(ref)))

    def list(self) -> List["Box"]:
        return [Box(self._loop, b) for b in _inline(self._a.list())]

    def events(self) -> Iterator[Dict[str, Any]]:
        return self._loop.iterate(self._a.events())


async def _construct(url: Optional[str], token: Optional[str], options: Dict[str, Any]) -> aio.AsyncClient:
    return aio.AsyncClient(url, token, **options)


class Box:
    """A box; see :class:`cubby.aio.AsyncBox` for each method's meaning."""

    def __init__(self, loop: _Loop, a: aio.AsyncBox) -> None:
        self._loop = loop
        self._a = a
        self.id = a.id
        self.name = a.name
        self.files = Files(loop, a.files)

    def __repr__(self) -> str:
        return repr(self._a)

    @property
    def info(self) -> BoxInfo:
        return self._a.info

    def refresh(self) -> BoxInfo:
        return _inline(self._a.refresh())

    def start(self) -> None:
        _inline(self._a.start())

    def stop(self, timeout: float = 10) -> None:
        _inline(self._a.stop(timeout))

    def kill(self, signal: Any = "KILL") -> None:
        _inline(self._a.kill(signal))

    def pause(self) -> None:
        _inline(self._a.pause())

    def snapshot(self, name: Optional[str] = None) -> Dict[str, Any]:
        return _inline(self._a.snapshot(name))

    def fork(self, count: int = 1) -> List["Box"]:
        return [Box(self._loop, b) for b in _inline(self._a.fork(count))]

    def unpause(self) -> None:
        _inline(self._a.unpause())

    def remove(self, force: bool = False) -> None:
        _inline(self._a.remove(force))

    def wait(self, timeout: Optional[float] = None) -> BoxInfo:
        return _inline(self._a.wait(timeout))

    def ports(self) -> List[Dict[str, Any]]:
        return _inline(self._a.ports())

    def stats(self) -> Dict[str, Any]:
        return _inline(self._a.stats())

    def stream_stats(self) -> Iterator[Dict[str, Any]]:
        return self._loop.iterate(self._a.stream_stats())

    def logs(self, **kw: Any) -> Logs:
        return self._loop.run(self._a.logs(**kw))

    def follow_logs(self, **kw: Any) -> Iterator[LogChunk]:
        return self._loop.iterate(self._a.follow_logs(**kw))

    def exec(self, cmd: aio.Command, *args: str, **kw: Any) -> ExecResult:
        if kw.get("on_stdout") is None and kw.get("on_stderr") is None:
            return _inline(self._a.exec(cmd, *args, **kw))  # one request, one answer
        return self._loop.run(self._a.exec(cmd, *args, **kw))

    def exec_stream(self, cmd: aio.Command, *args: str, **kw: Any) -> "ExecStream":
        return ExecStream(self._loop, self._loop.run(self._a.exec_stream(cmd, *args, **kw)))


class ExecStream:
    """A streaming exec; see :class:`cubby.aio.AsyncExecStream`."""

    def __init__(self, loop: _Loop, a: aio.AsyncExecStream) -> None:
        self._loop = loop
        self._a = a
        self.id = a.id

    def __enter__(self) -> "ExecStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def stdout(self) -> bytes:
        return self._a.stdout

    @property
    def stderr(self) -> bytes:
        return self._a.stderr

    def write_stdin(self, data: Any) -> None:
        self._loop.run(self._a.write_stdin(data))

    def close_stdin(self) -> None:
        self._loop.run(self._a.close_stdin())

    def resize(self, width: int, height: int) -> None:
        self._loop.run(self._a.resize(width, height))

    def kill(self, signal: Any = "KILL") -> None:
        self._loop.run(self._a.kill(signal))

    def wait(self, timeout: Optional[float] = None) -> ExecResult:
        return self._loop.run(self._a.wait(timeout))

    def close(self) -> None:
        self._loop.run(self._a.close())


class Files:
    """A box's files; see :class:`cubby.aio.AsyncFiles`."""

    def __init__(self, loop: _Loop, a: aio.AsyncFiles) -> None:
        self._loop = loop
        self._a = a

    def read(self, path: str) -> bytes:
        return _inline(self._a.read(path))

    def write(self, path: str, data: Any, mode: int = 0o644) -> None:
        _inline(self._a.write(path, data, mode))

    def upload(self, local_path: str, box_dir: str) -> None:
        self._loop.run(self._a.upload(local_path, box_dir))

    def download(self, box_path: str, local_dir: str) -> None:
        self._loop.run(self._a.download(box_path, local_dir))


class Snapshots:
    """The home's snapshots; see :class:`cubby.aio.AsyncSnapshots`."""

    def __init__(self, loop: _Loop, a: aio.AsyncSnapshots) -> None:
        self._loop = loop
        self._a = a

    def list(self) -> List[Dict[str, Any]]:
        return _inline(self._a.list())

    def run(self, ref: str, count: int = 1, name: Optional[str] = None) -> List["Box"]:
        return [Box(self._loop, b) for b in _inline(self._a.run(ref, count, name))]

    def remove(self, ref: str) -> None:
        _inline(self._a.remove(ref))


class Images:
    """The home's images; see :class:`cubby.aio.AsyncImages`."""

    def __init__(self, loop: _Loop, a: aio.AsyncImages) -> None:
        self._loop = loop
        self._a = a

    def list(self) -> List[Dict[str, Any]]:
        return _inline(self._a.list())

    def pull(self, ref: str, on_progress: Any = None) -> Dict[str, Any]:
        return self._loop.run(self._a.pull(ref, on_progress))

    def import_tar(self, path: str, ref: str) -> Dict[str, Any]:
        return self._loop.run(self._a.import_tar(path, ref))

    def remove(self, ref: str) -> None:
        _inline(self._a.remove(ref))

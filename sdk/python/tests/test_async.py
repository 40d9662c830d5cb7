"""The same operations through AsyncClient."""
from __future__ import annotations

import asyncio
import os

import pytest

import cubby
from conftest import IMAGE, Server


def run(coro):
    return asyncio.run(coro)


def test_async_client_does_what_the_sync_one_does(server: Server) -> None:
    async def main() -> None:
        async with cubby.AsyncClient(f"unix://{server.sock}") as c:
            async with c.box(IMAGE, cmd=["sleep", "1000000"], network="none") as box:
                r = await box.exec("sh", "-c", "echo out; echo err >&2; exit 7")
                assert (r.exit_code, r.status, r.stdout, r.stderr) == (7, "exited", "out\n", "err\n")
                r = await box.exec("sh", "-c", "kill -9 $$")
                assert (r.exit_code, r.status, r.signal) == (137, "signaled", 9)
                r = await box.exec("sleep", "1000", timeout=0.5)
                assert r.status == "timed_out"
                r = await box.exec("cat", stdin="piped")
                assert r.stdout == "piped"

                chunks: list[str] = []

                async def collect(text: str) -> None:  # callbacks may be coroutines
                    chunks.append(text)

                r = await box.exec("sh", "-c", "for i in 1 2 3; do echo $i; done", on_stdout=collect)
                assert "".join(chunks) == "1\n2\n3\n" and r.exit_code == 0

                data = os.urandom(1 << 20)
                await box.files.write("/tmp/x", data)
                assert await box.files.read("/tmp/x") == data

                results = await asyncio.gather(*(box.exec("sh", "-c", f"echo {i}; exit {i % 7}")
                                                 for i in range(64)))
                assert [(r.exit_code, r.stdout) for r in results] == [(i % 7, f"{i}\n") for i in range(64)]

                await box.stop(timeout=1)
                assert box.info.status == "stopped"
                await box.start()
                assert (await box.refresh()).status == "running"
                with pytest.raises(cubby.Conflict):
                    await box.remove()
            with pytest.raises(cubby.NotFound):
                await c.get(box.id)

    run(main())

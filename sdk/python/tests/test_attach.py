"""WebSocket attach with a real client (python3-websockets), speaking
Kubernetes' v5.channel.k8s.io directly, not through the SDK."""
from __future__ import annotations

import asyncio
import json

import httpx
import websockets

import cubby
from conftest import Server

SUB = "v5.channel.k8s.io"


def _create_exec(server: Server, box_id: str, body: dict) -> str:
    with httpx.Client(transport=httpx.HTTPTransport(uds=server.sock), base_url="http://cubby") as h:
        r = h.post(f"/v1/boxes/{box_id}/execs", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


async def _connect(server: Server, path: str):
    return await websockets.unix_connect(server.sock, "ws://cubby" + path, subprotocols=[SUB], ping_interval=None)


async def _until_status(ws) -> tuple[bytes, bytes, dict]:
    out, err = bytearray(), bytearray()
    async for msg in ws:
        ch, payload = msg[0], msg[1:]
        if ch == 1:
            out += payload
        elif ch == 2:
            err += payload
        elif ch == 3:
            return bytes(out), bytes(err), json.loads(payload)
    raise AssertionError("the server closed without a status frame")


def test_shell_session_with_resize_and_ctrl_d(server: Server, box: cubby.Box) -> None:
    exec_id = _create_exec(server, box.id, {"cmd": ["sh"], "tty": True, "stdin": True})

    async def main() -> None:
        ws = await _connect(server, f"/v1/boxes/{box.id}/execs/{exec_id}/attach")
        assert ws.subprotocol == SUB
        await ws.send(b"\x04" + json.dumps({"Width": 123, "Height": 45}).encode())
        await ws.send(b"\x00stty size; exit 5\n")
        out, _, status = await _until_status(ws)
        await ws.close()
        assert b"45 123" in out
        assert status["status"] == "Failure"
        assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "5"}

        # Ctrl-D on an empty line ends the shell: status Success.
        exec2 = _create_exec(server, box.id, {"cmd": ["sh"], "tty": True, "stdin": True})
        ws = await _connect(server, f"/v1/boxes/{box.id}/execs/{exec2}/attach")
        # As a person would: at the prompt. Typed earlier, the ^D can be
        # lost when the shell's line editor switches the tty to raw mode.
        seen = b""
        while b"# " not in seen:
            msg = await ws.recv()
            if msg[0] == 1:
                seen += msg[1:]
        await ws.send(b"\x00\x04")
        _, _, status = await _until_status(ws)
        await ws.close()
        assert status["status"] == "Success"

    asyncio.run(main())


def test_dropped_client_reattaches_and_gets_the_rest(server: Server, box: cubby.Box) -> None:
    # The process waits for a line on stdin between two halves of its output,
    # so the drop happens at a known point, with no sleeping.
    script = 'echo first-half; read x; for i in $(seq 1 1000); do echo "line $i"; done; echo end >&2'
    exec_id = _create_exec(server, box.id, {"cmd": ["sh", "-c", script], "stdin": True})
    expected = b"first-half\n" + b"".join(b"line %d\n" % i for i in range(1, 1001))

    async def main() -> None:
        path = f"/v1/boxes/{box.id}/execs/{exec_id}/attach"
        ws = await _connect(server, path)
        got = bytearray()
        while not got.endswith(b"first-half\n"):
            msg = await ws.recv()
            assert msg[0] == 1
            got += msg[1:]
        await ws.send(b"\x00go\n")
        # Take a little of the second half, then drop the connection hard.
        while len(got) < 200:
            msg = await ws.recv()
            if msg[0] == 1:
                got += msg[1:]
        ws.transport.abort()

        ws = await _connect(server, f"{path}?stdout_offset={len(got)}&stderr_offset=0")
        out, err, status = await _until_status(ws)
        await ws.close()
        assert bytes(got) + out == expected  # nothing lost, nothing twice, no protocol byte
        assert err == b"end\n"
        assert status["status"] == "Success"

    asyncio.run(main())


def test_garbage_websocket_frames_end_only_that_session(server: Server, box: cubby.Box) -> None:
    exec_id = _create_exec(server, box.id, {"cmd": ["cat"], "stdin": True})

    async def main() -> None:
        ws = await _connect(server, f"/v1/boxes/{box.id}/execs/{exec_id}/attach")
        await ws.send("a text frame is not a channel frame")
        await ws.send(b"")  # no channel byte
        await ws.send(b"\x07unknown channel")
        await ws.send(b"\x04{not json")
        # The session may be refused (closed with an error) or the frames
        # ignored; either way the server serves others.
        try:
            await ws.send(b"\x00still\n")
            await ws.send(b"\xff\x00")
            await asyncio.wait_for(_until_status(ws), 30)
        except (websockets.exceptions.ConnectionClosed, AssertionError):
            pass
        await ws.close()

    asyncio.run(main())
    assert box.exec("echo", "alive").stdout == "alive\n"

"""The server itself: hostile input, limits, TCP with a token, TLS, and a
stalled client that must not hold up anyone else.

Raw sockets where the point is bytes a well-behaved client never sends.
Every error is the one envelope {code, message, request_id} with the status
docs/openapi.json gives it, and the server serves on afterwards.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import stat
import subprocess
from typing import Dict, Tuple

import httpx
import pytest

import cubby
from conftest import CUBBY, IMAGE, Server, _own_children


def raw(sock_path: str, data: bytes, shut: bool = False) -> Tuple[int, Dict[str, str], bytes]:
    """Sends data on a fresh connection; the status, headers and body of the answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)  # a backstop: the server answers or closes
        s.connect(sock_path)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before all of it was read: the answer is still there
        if shut:
            s.shutdown(socket.SHUT_WR)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        want = int(headers.get("content-length", "0"))
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


def envelope(status: int, headers: Dict[str, str], body: bytes, want_status: int, want_code: str) -> str:
    assert status == want_status, (status, body[:300])
    e = json.loads(body)
    assert set(e) == {"code", "message", "request_id"}, e
    assert e["code"] == want_code and e["message"], e
    assert e["request_id"] == headers.get("x-request-id"), (e, headers)
    return e["message"]


def req(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: cubby\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def test_hostile_requests_get_one_envelope_and_the_server_serves_on(server: Server) -> None:
    sock = server.sock
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660  # the socket's mode is the authentication
    envelope(*raw(sock, b"GARBAGE\r\n\r\n"), 400, "bad_request")
    envelope(*raw(sock, req("GET", "/v1/nope")), 404, "not_found")
    envelope(*raw(sock, req("GET", "/v1/boxes/no-such-box")), 404, "not_found")
    envelope(*raw(sock, req("POST", "/v1/boxes", b"{")), 400, "bad_request")
    envelope(*raw(sock, req("POST", "/v1/boxes", b"[1,2]")), 400, "bad_request")
    msg = envelope(*raw(sock, req("POST", "/v1/boxes", json.dumps({"image": IMAGE, "evil": 1}).encode())),
                   400, "bad_request")
    assert "evil" in msg
    envelope(*raw(sock, req("POST", "/v1/boxes", json.dumps({"image": IMAGE, "memory": "lots"}).encode())),
             400, "bad_request")
    envelope(*raw(sock, req("POST", "/v1/boxes", json.dumps({"image": "no-such-image", "pull": "never"}).encode())),
             404, "not_found")
    envelope(*raw(sock, req("POST", "/v1/boxes", json.dumps({"image": IMAGE, "pull": "sometimes"}).encode())),
             400, "bad_request")
    # Too large: a JSON body over 1 MiB, an upload announced past the 64 GiB
    # limit (refused at the header, before a byte of it is read), headers over 16 KiB.
    envelope(*raw(sock, req("POST", "/v1/boxes", b"[" + b"1," * (600 << 10) + b"1]")), 413, "too_large")
    envelope(*raw(sock, b"PUT /v1/boxes/x/files?path=/tmp/f HTTP/1.1\r\nHost: cubby\r\n"
                        b"Content-Length: 70000000000\r\n\r\n"), 413, "too_large")
    envelope(*raw(sock, req("GET", "/v1/info", extra="X-Big: " + "a" * (20 << 10) + "\r\n")), 413, "too_large")
    # A truncated body: the client hung up mid-request. Nothing to answer, nothing to crash.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(b"POST /v1/boxes HTTP/1.1\r\nHost: cubby\r\nContent-Length: 100\r\n\r\n{\"ima")
    # A WebSocket route without the upgrade, an upgrade without the subprotocol.
    envelope(*raw(sock, req("GET", "/v1/boxes/x/execs/y/attach")), 400, "bad_request")
    assert server.proc is not None and server.proc.poll() is None
    status, _, body = raw(sock, req("GET", "/v1/info"))
    assert status == 200 and "version" in json.loads(body)


def test_websocket_without_the_k8s_subprotocol_is_refused(server: Server, box: cubby.Box) -> None:
    with cubby.Client(f"unix://{server.sock}") as c:
        created = c._loop.run(c._a._json("POST", f"/v1/boxes/{box.id}/execs", body={"cmd": ["true"]}))
    upgrade = (f"GET /v1/boxes/{box.id}/execs/{created['id']}/attach HTTP/1.1\r\nHost: cubby\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()
    msg = envelope(*raw(server.sock, upgrade), 400, "bad_request")
    assert "v5.channel.k8s.io" in msg


def _start(home: str, *args: str) -> Tuple[subprocess.Popen, str]:
    p = subprocess.Popen([CUBBY, "--home", home, "serve", "--socket", os.path.join(home, "t.sock"), *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    _own_children.add(p.pid)
    assert p.stdout is not None
    lines = [p.stdout.readline().decode()]  # the readiness line names the TCP listener
    tcp = [ln for ln in lines if ln.startswith("cubby serve: listening on tcp:")]
    if not tcp:
        p.kill()
        err = p.communicate()[1].decode(errors="replace")
        _own_children.discard(p.pid)
        raise AssertionError(f"no TCP listener: {lines} {err}")
    return p, tcp[0].strip().rsplit("tcp:", 1)[1]


def _stop(p: subprocess.Popen) -> None:
    p.terminate()
    p.communicate()
    _own_children.discard(p.pid)


def test_tcp_needs_the_bearer_token(home: str, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456\n")
    os.chmod(token, 0o600)
    # TCP without a token file is refused: an open port would be root on this host.
    r = subprocess.run([CUBBY, "--home", home, "serve", "--socket", os.path.join(home, "t.sock"),
                        "--listen", "127.0.0.1:0"], capture_output=True, timeout=60)
    assert r.returncode != 0 and b"token" in r.stderr
    p, addr = _start(home, "--listen", "127.0.0.1:0", "--token-file", str(token))
    try:
        base = f"http://{addr}"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer s3cret-token-0123456-and-more"},
                        {"Authorization": "Bearer s3cret-token-012345"},
                        {"Authorization": "Basic czNjcmV0LXRva2Vu"}):
            resp = httpx.get(base + "/v1/info", headers=headers)
            assert resp.status_code == 401, (headers, resp.text)
            assert resp.json()["code"] == "unauthorized"
        resp = httpx.get(base + "/v1/info", headers={"Authorization": "Bearer s3cret-token-0123456"})
        assert resp.status_code == 200
        with cubby.Client(base, token="s3cret-token-0123456") as c:
            assert any(IMAGE in json.dumps(i) for i in c.images.list())
    finally:
        _stop(p)


def test_tls_listener(home: str, tmp_path) -> None:
    cert, key, token = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "token"
    token.write_text("tls-test-token-0123")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    p, addr = _start(home, "--listen", "127.0.0.1:0", "--token-file", str(token),
                     "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        resp = httpx.get(f"https://{addr}/v1/info", headers={"Authorization": "Bearer tls-test-token-0123"}, verify=str(cert))
        assert resp.status_code == 200
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port
            httpx.get(f"http://{addr}/v1/info", headers={"Authorization": "Bearer tls-test-token-0123"}, timeout=10)
        with pytest.raises(httpx.ConnectError):  # an untrusted certificate
            httpx.get(f"https://{addr}/v1/info", headers={"Authorization": "Bearer tls-test-token-0123"})
        with cubby.Client(f"https://{addr}", token="tls-test-token-0123", verify=str(cert)) as c:
            with c.box(IMAGE, cmd=["sleep", "1000000"], network="none") as b:
                assert b.exec("echo", "over tls").stdout == "over tls\n"
    finally:
        _stop(p)


def test_stalled_clients_do_not_delay_others(server: Server, box: cubby.Box) -> None:
    """Clients that stop mid-request, or stop reading a stream, each hold only
    their own connection: 64 streaming execs and blocking calls still finish."""
    stalled = []
    try:
        for _ in range(8):  # half a request, then silence
            s = socket.socket(socket.AF_UNIX)
            s.connect(server.sock)
            s.sendall(b"POST /v1/boxes HTTP/1.1\r\nHost: cubby\r\nContent-Length: 50\r\n\r\n{")
            stalled.append(s)
        # A reader that never reads: an attached exec writing far more than
        # any socket buffer; it must block only itself.
        with cubby.Client(f"unix://{server.sock}") as c:
            created = c._loop.run(c._a._json("POST", f"/v1/boxes/{box.id}/execs",
                                             body={"cmd": ["sh", "-c", "yes | head -c 100000000"]}))
        s = socket.socket(socket.AF_UNIX)
        s.connect(server.sock)
        s.sendall((f"GET /v1/boxes/{box.id}/execs/{created['id']}/attach HTTP/1.1\r\nHost: cubby\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode())
        stalled.append(s)

        async def main() -> None:
            async with cubby.AsyncClient(f"unix://{server.sock}") as c:
                b = await c.get(box.id)
                streams = [await b.exec_stream("sh", "-c", f"echo start {i}; read x; echo got $x", stdin=True)
                           for i in range(64)]
                for i, st in enumerate(streams):
                    await st.write_stdin(f"{i}\n")
                results = [await st.wait(timeout=120) for st in streams]
                for st in streams:
                    await st.close()
                assert [r.stdout for r in results] == [f"start {i}\ngot {i}\n" for i in range(64)]
                r = await b.exec("echo", "still quick")
                assert r.stdout == "still quick\n"
                assert (await c.info())["version"]

        asyncio.run(main())
    finally:
        for s in stalled:
            s.close()


def test_file_routes_stay_inside_the_box(server: Server, box: cubby.Box, tmp_path) -> None:
    """A path with .. is refused; a symlink pointing out resolves inside the
    box's root, as cp's do; the host's files are never read or written."""
    marker = tmp_path / "host-secret"
    marker.write_text("host only")
    for p in ("/../../../../" + str(marker), "/tmp/../../" + str(marker)):
        with pytest.raises(cubby.BadRequest):
            box.files.read(p)
        with pytest.raises(cubby.BadRequest):
            box.files.write(p, b"x")
    box.exec("ln", "-s", str(tmp_path), "/tmp/out")  # the host's path, which in the box does not exist
    with pytest.raises(cubby.NotFound):
        box.files.read("/tmp/out/host-secret")
    with pytest.raises(cubby.CubbyError):
        box.files.write("/tmp/out/written", b"x")
    assert not (tmp_path / "written").exists() and marker.read_text() == "host only"
    for bad in ("", "relative/path", "/tmp/\x00nul"):
        with pytest.raises(cubby.BadRequest):
            box.files.read(bad)

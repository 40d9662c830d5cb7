"""The routes the other files do not reach: events, stats, ports, logs with
Docker's options, images (import, load, list, remove), uploads spooled to
disk, and the request timeout.

Each asserts what the route does, not only that it answers: the contract
check (conftest) already holds every answer to docs/openapi.json.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import tarfile
import time
from typing import Any, Dict, Iterator, List

import httpx
import pytest

import cubby
from conftest import IMAGE, ROOTFS, Server, run_cli
from test_server import envelope, raw, req


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(events: Iterator[Dict[str, Any]], box_id: str, action: str) -> Dict[str, Any]:
    """The next event of `box_id` with `action`; the stream is the wait."""
    for e in events:
        if e.get("type") == "box" and e.get("id") == box_id and e.get("action") == action:
            return e
    raise AssertionError(f"the event stream ended before {action} of {box_id}")


def test_events_follow_a_box_made_by_the_cli(server: Server) -> None:
    # A raw stream: its headers arrive once the server watches the home, so
    # everything done after this line is an event we must see.
    with httpx.Client(transport=httpx.HTTPTransport(uds=server.sock), timeout=30) as h, \
            h.stream("GET", "http://cubby/v1/events") as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        events = (json.loads(line) for line in r.iter_lines() if line.strip())
        box_id = run_cli(server.home, "run", "-d", "--network", "none", IMAGE, "sleep", "1000000").stdout.decode().strip()
        created = _wait_for(events, box_id, "created")
        assert created["name"] and created["time"]
        _wait_for(events, box_id, "started")
        run_cli(server.home, "kill", box_id)
        exited = _wait_for(events, box_id, "exited")
        assert exited["exit_code"] == 137, exited
        run_cli(server.home, "rm", box_id)
        _wait_for(events, box_id, "removed")
        # Images too: an import, then its removal.
        run_cli(server.home, "import", ROOTFS, "evtest:1")
        seen = []
        for e in events:
            if e.get("type") == "image" and e.get("name", "").endswith("evtest:1"):
                seen.append(e["action"])
                if e["action"] == "pulled":
                    run_cli(server.home, "image", "rm", "evtest:1")
                if e["action"] == "removed":
                    break
        assert seen == ["pulled", "removed"], seen


def test_stats_sample_and_stream(client: cubby.Client) -> None:
    with client.box(IMAGE, cmd=["sleep", "1000000"], network="none", memory=256 << 20) as b:
        # CPU time the box's cgroup must count (execs run in it): ~0.2 s of
        # shell arithmetic, well above the 10 ms tick of a v1 fallback.
        assert b.exec("sh", "-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done").exit_code == 0
        s = b.stats()
        assert s["pids"] >= 1, s
        assert s["memory_bytes"] > 0 and s["memory_limit_bytes"] == 256 << 20, s
        assert s["cpu_usage_ns"] > 0, s
        samples = []
        for sample in b.stream_stats():
            samples.append(sample)
            if len(samples) == 2:
                break
        assert samples[1]["time"] > samples[0]["time"], samples
    with pytest.raises(cubby.NotFound):
        client.get(b.id).stats()


def test_ports_are_the_published_ones(client: cubby.Client) -> None:
    port = _free_port()  # the box's forward binds it through slirp
    with client.box(IMAGE, cmd=["sleep", "1000000"], publish=[f"127.0.0.1:{port}:80"]) as b:
        assert b.ports() == [{"host_ip": "127.0.0.1", "host_port": port, "guest_port": 80, "protocol": "tcp"}]
    with client.box(IMAGE, cmd=["sleep", "1000000"], network="none") as b:
        assert b.ports() == []


def test_logs_tail_since_until_timestamps(client: cubby.Client) -> None:
    before = time.time()
    with client.box(IMAGE, cmd=["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; sleep 1000000"],
                    network="none") as b:
        seen = b""
        for chunk in b.follow_logs():
            seen += chunk.data
            if b"line5\n" in seen:
                break
        assert b.logs().stdout == "line1\nline2\nline3\nline4\nline5\n"
        assert b.logs(tail=2).stdout == "line4\nline5\n"
        assert b.logs(tail=0).stdout == ""
        stamped = b.logs(timestamps=True, tail=1).stdout
        m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) line5\n", stamped)
        assert m, stamped
        assert b.logs(since=before - 1).stdout.count("\n") == 5
        assert b.logs(since=time.time() + 3600).stdout == ""
        assert b.logs(until=datetime.datetime.fromtimestamp(before - 60)).stdout == ""
        for bad in ({"tail": "-1"}, {"since": "yesterday"}, {"until": "1e9"}):
            with httpx.Client(transport=httpx.HTTPTransport(uds=client._a._sock)) as h:
                r = h.get(f"http://cubby/v1/boxes/{b.id}/logs", params=bad)
            assert r.status_code == 400 and r.json()["code"] == "bad_request", (bad, r.text)


def _oci_archive(rootfs_tar: str, out: str, ref: str) -> None:
    """An OCI image layout archive of one layer (the test rootfs), as
    `docker save`/skopeo write them, named `ref`."""
    blobs: Dict[str, bytes] = {}

    def blob(data: bytes) -> Dict[str, Any]:
        d = hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return {"digest": f"sha256:{d}", "size": len(data)}

    with open(rootfs_tar, "rb") as f:
        layer = f.read()
    layer_d = blob(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [layer_d["digest"]]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_d}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(manifest),
        "annotations": {"org.opencontainers.image.ref.name": ref}}]}).encode()
    with tarfile.open(out, "w") as t:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)] + \
                [(f"blobs/sha256/{d}", b) for d, b in blobs.items()]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))


def test_images_import_load_list_remove(client: cubby.Client, server: Server, tmp_path) -> None:
    imported = client.images.import_tar(ROOTFS, "imported:1")
    assert imported["ref"].endswith("imported:1") and imported["id"].startswith("sha256:")
    archive = str(tmp_path / "img.tar")
    _oci_archive(ROOTFS, archive, "loaded:2")
    with open(archive, "rb") as f, httpx.Client(transport=httpx.HTTPTransport(uds=server.sock), timeout=60) as h:
        r = h.post("http://cubby/v1/images/load", content=f.read(), headers={"Content-Type": "application/x-tar"})
    assert r.status_code == 201, r.text
    loaded = r.json()
    assert len(loaded) == 1 and loaded[0]["ref"].endswith("loaded:2"), loaded
    refs = {i["ref"] for i in client.images.list()}
    assert any(x.endswith("imported:1") for x in refs) and any(x.endswith("loaded:2") for x in refs), refs
    # A loaded image runs; an image in use cannot be removed; then it can.
    with client.box("loaded:2", cmd=["sleep", "1000000"], network="none", pull="never") as b:
        assert b.exec("cat", "/etc/hostname").exit_code == 0
        with pytest.raises(cubby.Conflict):
            client.images.remove("loaded:2")
    client.images.remove("loaded:2")
    client.images.remove("imported:1")
    refs = {i["ref"] for i in client.images.list()}
    assert not any(x.endswith(("imported:1", "loaded:2")) for x in refs), refs
    with pytest.raises(cubby.NotFound):
        client.images.remove("loaded:2")
    # A corrupt archive is one 400, and stores nothing.
    with httpx.Client(transport=httpx.HTTPTransport(uds=server.sock), timeout=60) as h:
        r = h.post("http://cubby/v1/images/load", content=b"not a tar" * 1000)
    assert r.status_code == 400 and r.json()["code"] == "bad_request", r.text
    assert len(client.images.list()) == len(refs)


def test_uploads_are_spooled_not_held_in_memory(box: cubby.Box, server: Server) -> None:
    assert server.proc is not None
    pid = server.proc.pid
    size = 160 << 20
    data = os.urandom(1 << 20) * (size >> 20)
    base_hwm = _status_kib(pid, "VmHWM")
    box.files.write("/big.bin", data)
    assert box.exec("sh", "-c", "wc -c < /big.bin").stdout.strip() == str(size)
    back = box.files.read("/big.bin")
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    grew = _status_kib(pid, "VmHWM") - base_hwm
    # Held in memory, the body alone would be 160 MiB (and its tar another).
    assert grew < 48 << 10, f"the server's peak memory grew by {grew >> 10} MiB for a {size >> 20} MiB upload"


def test_a_stalled_request_gets_a_408(home: str) -> None:
    s = Server(home, "--io-timeout", "1").start()
    try:
        # Half a body, then silence: the server's own deadline answers.
        st = raw(s.sock, b"POST /v1/boxes HTTP/1.1\r\nHost: cubby\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"image\":")
        envelope(*st, 408, "timeout")
        assert raw(s.sock, req("GET", "/v1/version"))[0] == 200  # and it serves on
    finally:
        s.stop()


def test_pull_streams_progress_from_a_local_registry(client: cubby.Client, tmp_path) -> None:
    """A real registry (Debian's docker-registry) on loopback, the test image
    pushed to it with skopeo; the pull's progress lines arrive before its result."""
    for tool in ("/usr/bin/docker-registry", "/usr/bin/skopeo"):
        if not os.access(tool, os.X_OK):
            pytest.fail(f"{tool} is missing: run scripts/install-deps.sh")
    port = _free_port()
    cfg = tmp_path / "registry.yml"
    cfg.write_text(f"version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {tmp_path}/data}}\n"
                   f"http:\n  addr: 127.0.0.1:{port}\n")
    reg = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert reg.stderr is not None
        for line in reg.stderr:  # its own word that it listens (EOF: it died)
            if b"listening on" in line:
                break
        else:
            pytest.fail("docker-registry exited before listening")
        archive = str(tmp_path / "img.tar")
        _oci_archive(ROOTFS, archive, "1")
        ref = f"127.0.0.1:{port}/sdk/busybox:1"
        subprocess.run(["/usr/bin/skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci-archive:{archive}",
                        f"docker://{ref}"], check=True, capture_output=True)
        lines: List[Dict[str, Any]] = []
        img = client.images.pull(ref, on_progress=lines.append)
        assert img["ref"] == ref and img["id"].startswith("sha256:"), img
        assert lines[0] == {"status": "pulling", "ref": ref}, lines[:3]
        downloading = [ln for ln in lines if ln.get("status") == "downloading"]
        assert downloading, lines
        assert downloading[-1]["current"] == downloading[-1]["total"] > 0, downloading
        assert all(a["current"] <= b["current"] for a, b in zip(downloading, downloading[1:])), downloading
        with client.box(ref, cmd=["sleep", "1000000"], network="none", pull="never") as b:
            assert b.exec("true").exit_code == 0
        # A second pull has nothing to fetch: no downloading line, the same image.
        again: List[Dict[str, Any]] = []
        assert client.images.pull(ref, on_progress=again.append)["id"] == img["id"]
        assert not [ln for ln in again if ln.get("status") == "downloading"], again
        with pytest.raises(cubby.NotFound):
            client.images.pull(f"127.0.0.1:{port}/sdk/none:1")
    finally:
        reg.terminate()
        reg.wait()
        if reg.stderr:
            reg.stderr.close()

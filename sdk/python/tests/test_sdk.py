"""The synchronous SDK against a real `cubby serve` (issue #11's list)."""
from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import cubby
from conftest import IMAGE, Server


def test_exec_exit_codes_and_statuses(box: cubby.Box) -> None:
    ok = box.exec("echo", "hello")
    assert (ok.exit_code, ok.status, ok.signal, ok.stdout) == (0, "exited", None, "hello\n")
    assert ok.ok and ok.duration >= 0

    seven = box.exec("sh", "-c", "echo out; echo err >&2; exit 7")
    assert (seven.exit_code, seven.status, seven.stdout, seven.stderr) == (7, "exited", "out\n", "err\n")

    killed = box.exec("sh", "-c", "kill -9 $$")
    assert (killed.exit_code, killed.status, killed.signal) == (137, "signaled", 9)

    missing = box.exec("/no/such/program")
    assert missing.exit_code == 127 and missing.error


def test_exec_stdin_env_cwd_user(box: cubby.Box) -> None:
    r = box.exec("cat", stdin=b"\x00binary\xffinput")
    assert r.stdout_bytes == b"\x00binary\xffinput"
    r = box.exec(["sh", "-c", 'echo "$GREETING $(pwd) $(id -u)"'], env={"GREETING": "hi"}, cwd="/tmp",
                 user="65534")
    assert r.stdout == "hi /tmp 65534\n"


def test_exec_timeout_is_a_status_not_an_error(box: cubby.Box) -> None:
    r = box.exec("sleep", "1000", timeout=0.5)
    assert r.status == "timed_out"
    assert r.exit_code != 0
    # The process is gone: nothing of it is left in the box.
    # (a whole command line: the box's own PID 1 is "sleep 1000000")
    assert not [l for l in box.exec("ps").stdout.splitlines() if l.endswith(" sleep 1000")]


def test_streaming_callbacks_arrive_in_order(box: cubby.Box) -> None:
    got: list[str] = []
    errs: list[str] = []
    r = box.exec("sh", "-c", 'for i in $(seq 1 200); do echo "line $i"; done; echo done >&2',
                 on_stdout=got.append, on_stderr=errs.append)
    assert r.exit_code == 0
    assert "".join(got) == "".join(f"line {i}\n" for i in range(1, 201))
    assert "".join(errs) == "done\n"
    assert r.stdout == "".join(got)


def test_files_round_trip_binary_20_mib(box: cubby.Box, tmp_path) -> None:
    data = os.urandom(20 << 20)
    box.files.write("/tmp/blob", data)
    assert box.files.read("/tmp/blob") == data
    digest = box.exec("sha256sum", "/tmp/blob").stdout.split()[0]
    assert digest == hashlib.sha256(data).hexdigest()

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha")
    (tree / "sub" / "b.bin").write_bytes(b"\x01\x02")
    box.files.upload(str(tree), "/tmp")  # into an existing directory, as docker cp SRC CTR:DIR/
    assert box.exec("cat", "/tmp/tree/a.txt", "/tmp/tree/sub/b.bin").stdout_bytes == b"alpha\x01\x02"
    out = tmp_path / "back"
    box.files.download("/tmp/tree", str(out))
    assert (out / "tree" / "a.txt").read_text() == "alpha"
    assert (out / "tree" / "sub" / "b.bin").read_bytes() == b"\x01\x02"


def test_file_errors_are_typed(box: cubby.Box) -> None:
    with pytest.raises(cubby.NotFound):
        box.files.read("/no/such/file")
    with pytest.raises(cubby.BadRequest):
        box.files.read("relative/path")


def test_logs_stop_start_remove(client: cubby.Client) -> None:
    b = client.create(IMAGE, cmd=["sh", "-c", "echo started; echo warn >&2; sleep 1000000"], network="none")
    try:
        # The box wrote its lines before we read them: follow until both are there.
        seen = b""
        for chunk in b.follow_logs():
            seen += chunk.data
            if b"started" in seen and b"warn" in seen:
                break
        logs = b.logs()
        assert logs.stdout == "started\n" and logs.stderr == "warn\n"
        b.stop(timeout=1)
        assert b.info.status == "stopped"  # by the user; "exited" is a box that ended by itself
        b.start()
        assert b.refresh().status == "running"
        with pytest.raises(cubby.Conflict):
            b.remove()
    finally:
        b.remove(force=True)
    with pytest.raises(cubby.NotFound):
        client.get(b.id)


def test_wait_returns_the_exit_code(client: cubby.Client) -> None:
    b = client.create(IMAGE, cmd=["sh", "-c", "exit 3"], network="none")
    try:
        assert b.wait(timeout=60).exit_code == 3
    finally:
        b.remove(force=True)


def test_unknown_box_and_bad_options(client: cubby.Client) -> None:
    with pytest.raises(cubby.NotFound):
        client.get("no-such-box")
    with pytest.raises(cubby.BadRequest):
        client.create(IMAGE, memory=1)
    with pytest.raises(cubby.NotFound):
        client.create("no-such-image:latest", pull="never")
    with pytest.raises(cubby.BadRequest):
        client.create(IMAGE, no_such_option=True)


def test_64_concurrent_execs_on_one_box(box: cubby.Box) -> None:
    def one(i: int) -> tuple[int, int, str]:
        r = box.exec("sh", "-c", f"echo {i}; exit {i % 50}")
        return i, r.exit_code, r.stdout

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    for i, code, out in results:
        assert code == i % 50 and out == f"{i}\n"


def test_exec_stream_stdin_and_kill(box: cubby.Box) -> None:
    with box.exec_stream("cat", stdin=True) as s:
        s.write_stdin(b"one\n")
        s.write_stdin("two\n")
        s.close_stdin()
        r = s.wait(timeout=60)
    assert r.exit_code == 0 and r.stdout == "one\ntwo\n"

    with box.exec_stream("sleep", "1000") as s:
        s.kill("KILL")
        r = s.wait(timeout=60)
    assert r.status == "signaled" and r.signal == 9


def test_server_kill9_loses_no_box(home: str, server: Server) -> None:
    """kill -9 of the server during an exec and during a create: no box lost
    or leaked, a restarted server lists them all, the next call works."""
    with cubby.Client(f"unix://{server.sock}") as c:
        boxes = [c.create(IMAGE, cmd=["sleep", "1000000"], network="none") for _ in range(3)]
        ids = {b.id for b in boxes}
        started = threading.Event()
        failure: list[BaseException] = []

        def long_exec() -> None:
            try:
                boxes[0].exec("sh", "-c", "echo go; sleep 1000", on_stdout=lambda _: started.set())
            except cubby.CubbyError as e:
                failure.append(e)

        t = threading.Thread(target=long_exec)
        t.start()
        assert started.wait(60)
        server.kill9()
        t.join(60)
        assert failure and isinstance(failure[0], cubby.ConnectionFailed)

    server.start()
    with cubby.Client(f"unix://{server.sock}") as c:
        listed = {b.id for b in c.list()}
        assert ids <= listed
        assert all(c.get(i).info.status == "running" for i in ids)
        assert c.get(boxes[0].id).exec("echo", "still here").stdout == "still here\n"

        # During a create: the create either made a box (it is listed and
        # can be removed) or did not; nothing is half made.
        created = threading.Thread(target=lambda: _create_quietly(c))
        created.start()
        server.kill9()
        created.join(60)
    server.start()
    with cubby.Client(f"unix://{server.sock}") as c:
        for b in c.list():
            assert b.info.status in ("created", "running", "exited"), b.info.raw
            b.remove(force=True)
        assert c.list() == []


def _create_quietly(c: cubby.Client) -> None:
    try:
        c.create(IMAGE, cmd=["sleep", "1000000"], network="none")
    except cubby.CubbyError:
        pass


def test_auto_start_and_idle_exit(home: str) -> None:
    """Client(home=H) with no server running starts one; it exits when idle."""
    sock = os.path.join(home, "cubby.sock")
    assert not os.path.exists(sock)
    env_bin = os.environ.get("CUBBY_BIN")
    from conftest import CUBBY
    os.environ["CUBBY_BIN"] = CUBBY
    try:
        with cubby.Client(home=home, idle_exit=1) as c:
            assert c.version()
            pid = _server_pid(sock)
    finally:
        if env_bin is None:
            os.environ.pop("CUBBY_BIN", None)
        else:
            os.environ["CUBBY_BIN"] = env_bin
    # Wait for its exit by event (its pidfd), with a backstop.
    fd = os.pidfd_open(pid)
    try:
        import select
        assert select.select([fd], [], [], 60)[0], "the auto-started server did not exit when idle"
    finally:
        os.close(fd)


def _server_pid(sock: str) -> int:
    import socket
    import struct
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock)
        cred = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", cred)[0]
    finally:
        s.close()

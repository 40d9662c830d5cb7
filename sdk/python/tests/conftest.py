"""Fixtures: a real `cubby serve` on a fresh home with the test image.

Run by ctest (tests/CMakeLists.txt) with CUBBY_BIN_DIR (the built binaries)
and CUBBY_TEST_ROOTFS (the busybox rootfs tar). The test process is a child
subreaper, as init is on a normal host: when a test kills the server with
SIGKILL, the shims it started are adopted here and reaped when they end.
After every test nothing of cubby's may be left: no process beyond those
alive before it (the server excepted), no box of the test left running.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import Dict, Iterator, List, Set

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the sdk/python package, not an installed one

import cubby  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
BIN_DIR = os.environ.get("CUBBY_BIN_DIR", os.path.join(REPO, "build", "bin"))
ROOTFS = os.environ.get("CUBBY_TEST_ROOTFS", os.path.join(REPO, "build", "test-rootfs.tar"))
CUBBY = os.path.join(BIN_DIR, "cubby")
IMAGE = "busybox"
CUBBY_NAMES = {"cubby", "cubby-shim", "cubby-agent", "cubby-fetch"}

PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

_own_children: Set[int] = set()  # Popen children: reaped by their Popen, not here


def reap_adopted() -> None:
    """Reaps exited processes this subreaper adopted (never a Popen child)."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in _own_children:
            return
        os.waitpid(info.si_pid, 0)


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])  # field 4, after the comm's ")"
    except (OSError, ValueError, IndexError):
        return 0


def cubby_processes() -> Set[int]:
    """cubby's processes descending from this test process. Since it is a
    subreaper, everything its servers started stays below it even after a
    server dies; other users of the machine are not counted."""
    me, found = os.getpid(), set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue
        if os.path.basename(argv0) not in CUBBY_NAMES:
            continue
        p, hops = int(d), 0
        while p > 1 and p != me and hops < 64:
            p, hops = _parent(p), hops + 1
        if p == me:
            found.add(int(d))
    return found


def run_cli(home: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([CUBBY, "--home", home, *args], capture_output=True, check=check,
                          env={**os.environ, "CUBBY_ISOLATION": os.environ.get("CUBBY_ISOLATION", "sandbox")})


class Server:
    """`cubby serve` on a home's socket, as a child of the test."""

    def __init__(self, home: str, *extra: str) -> None:
        self.home = home
        self.sock = os.path.join(home, "cubby.sock")
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        self.proc = subprocess.Popen([CUBBY, "--home", self.home, "serve", "--socket", self.sock, *self.extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        _own_children.add(self.proc.pid)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the readiness line, or EOF if it failed
        if not line.startswith(b"cubby serve: listening"):
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            self.proc.wait()
            raise RuntimeError(f"cubby serve did not start: {err}")
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        _own_children.discard(self.proc.pid)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()
        self.proc = None


@pytest.fixture(scope="session")
def image_home() -> Iterator[str]:
    """A home with the test image, imported once and copied per test."""
    d = tempfile.mkdtemp(prefix="cubby-sdk-img-")
    home = os.path.join(d, "home")
    run_cli(home, "import", ROOTFS, IMAGE)
    yield home
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def home(image_home: str) -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="cubby-sdk-")
    h = os.path.join(d, "home")
    shutil.copytree(image_home, h, symlinks=True)
    os.environ["CUBBY_ISOLATION"] = os.environ.get("CUBBY_ISOLATION", "sandbox")
    before = cubby_processes()
    yield h
    # Everything a test made is gone: remove what is left, then check.
    leftover = [b["id"] for b in _ls(h)]
    for bid in leftover:
        run_cli(h, "rm", "-f", bid, check=False)
    reap_adopted()
    leaked = cubby_processes() - before
    shutil.rmtree(d, ignore_errors=True)
    assert not leftover, f"the test left boxes behind: {leftover}"
    assert not leaked, f"cubby processes leaked: {sorted(leaked)}"


def _ls(home: str) -> List[Dict]:
    import json
    r = run_cli(home, "ls", "-a", "--format", "json", check=False)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    data = json.loads(r.stdout)
    return data if isinstance(data, list) else []


@pytest.fixture
def server(home: str) -> Iterator[Server]:
    s = Server(home).start()
    yield s
    s.stop()


@pytest.fixture
def client(server: Server) -> Iterator[cubby.Client]:
    with cubby.Client(f"unix://{server.sock}", request_timeout=30) as c:
        yield c


@pytest.fixture
def box(client: cubby.Client) -> Iterator[cubby.Box]:
    with client.box(IMAGE, cmd=["sleep", "1000000"], network="none") as b:
        yield b


# -- the OpenAPI contract: every exchange of every test is checked -----------
import contract  # noqa: E402

contract.install()
_CONTRACT = contract.Contract.load()


@pytest.fixture(autouse=True)
def _check_contract() -> Iterator[None]:
    contract.take()
    yield
    exchanges = contract.take()
    if _CONTRACT is None:
        pytest.fail(f"docs/openapi.json is missing ({contract.DOC_PATH})")
    problems = [p for p in (_CONTRACT.check(*e) for e in exchanges) if p]
    assert not problems, "responses that do not match the OpenAPI document:\n" + "\n".join(problems[:20])

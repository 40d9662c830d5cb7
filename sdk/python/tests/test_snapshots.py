"""Snapshots of running vm boxes through the SDK and the API (issue 14):
box.snapshot(), client.snapshots.list/run/remove, box.fork(). The guests run
under TCG here (no usable KVM); the counter lives only in a shell variable,
stepped by a FIFO handshake, so a copy that booted instead of being
restored would start again at 1."""
from __future__ import annotations

import os
import shutil

import pytest

import cubby
from conftest import IMAGE

os.environ.setdefault("CUBBY_VM_ACCEL", "tcg")  # the server inherits it
if not shutil.which("qemu-system-x86_64"):
    pytest.skip("no QEMU: vm boxes cannot run here", allow_module_level=True)

COUNTER = ["sh", "-c", "mkfifo /tmp/tick /tmp/done 2>/dev/null; i=0; "
           "while :; do cat /tmp/tick >/dev/null; i=$((i+1)); echo $i > /tmp/done; done"]


def tick(box: cubby.Box) -> int:
    r = box.exec(["sh", "-c", "mkfifo /tmp/tick /tmp/done 2>/dev/null; echo > /tmp/tick; cat /tmp/done"])
    assert r.exit_code == 0, r.stderr
    return int(r.stdout)


def test_snapshot_run_fork_and_remove(client: cubby.Client) -> None:
    with client.box(IMAGE, cmd=COUNTER, network="none", isolation="vm") as orig:
        assert [tick(orig) for _ in range(3)] == [1, 2, 3]
        snap = orig.snapshot("three")
        assert snap["name"] == "three" and snap["box_id"] == orig.id and snap["size"] > 0
        assert tick(orig) == 4
        assert [s["id"] for s in client.snapshots.list()] == [snap["id"]]

        boxes = client.snapshots.run("three", count=2)
        try:
            assert len(boxes) == 2 and len({b.id for b in boxes}) == 2
            assert [tick(b) for b in boxes] == [4, 4]  # each from the saved 3, not from 0 or the original's 4
            assert tick(boxes[0]) == 5
        finally:
            for b in boxes:
                b.remove(force=True)

        forks = orig.fork(2)
        try:
            assert [tick(f) for f in forks] == [5, 5]
            assert tick(orig) == 5
            hostnames = {f.exec(["hostname"]).stdout for f in forks}
            assert hostnames == {f.id[:12] + "\n" for f in forks}
        finally:
            for f in forks:
                f.remove(force=True)

        with pytest.raises(cubby.errors.Conflict):
            orig.snapshot("three")  # the name is taken
        client.snapshots.remove("three")
        assert client.snapshots.list() == []
        with pytest.raises(cubby.errors.NotFound):
            client.snapshots.run("three")


def test_a_sandbox_box_cannot_be_snapshotted(box: cubby.Box) -> None:
    with pytest.raises(cubby.errors.BadRequest):
        box.snapshot()

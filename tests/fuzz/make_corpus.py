#!/usr/bin/python3
"""Writes the seed corpus of tests/fuzz/proto_fuzz.cc: one valid payload of
every message type (proto/messages.h), the malformed ones issue 10 found
(wrong-typed fields, a 100 000-deep payload), and framed streams as a
session and the mux carry them. Rerun after a message changes:
    tests/fuzz/make_corpus.py tests/fuzz/corpus/proto
"""
import hashlib
import os
import struct
import sys


def pack(v):
    """A minimal MessagePack encoder (maps, arrays, str, bin, ints, bools, nil)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xdb" + struct.pack(">I", len(b))) + b
    if isinstance(v, (bytes, bytearray)):
        return b"\xc6" + struct.pack(">I", len(v)) + bytes(v)
    if isinstance(v, list):
        return b"\xdd" + struct.pack(">I", len(v)) + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        return b"\xdf" + struct.pack(">I", len(v)) + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


def frame(payload, channel=0):
    return struct.pack(">II", len(payload), channel) + payload


VALID = [
    {"t": "hello", "v": 1, "min": 1},
    {"t": "hello", "v": 1, "agent": "cubby-agent 0.1"},
    {"t": "ping"}, {"t": "pong"}, {"t": "watch_start"}, {"t": "in_eof"}, {"t": "ok"}, {"t": "cp_end"},
    {"t": "go"}, {"t": "close"},
    {"t": "exec", "argv": ["sh", "-c", "echo hi"], "env": ["A=1"], "cwd": "/", "user": "root", "stdin": True,
     "tty": True, "rows": 24, "cols": 80, "timeout_ms": 1000, "detach": False},
    {"t": "resize", "rows": 50, "cols": 132},
    {"t": "in", "d": b"input\n"},
    {"t": "signal", "sig": 15},
    {"t": "exec_status", "id": 7},
    {"t": "attach", "start": True, "stdin": True, "rows": 24, "cols": 80},
    {"t": "kill", "sig": 9},
    {"t": "cp_stat", "path": "/etc"},
    {"t": "cp_stat", "kind": "d"},
    {"t": "cp_put", "dir": "/srv", "keep_owner": True},
    {"t": "cp_get", "path": "/srv", "follow": False},
    {"t": "cp_entry", "p": "a/b", "k": "f", "mode": 0o644, "uid": 0, "gid": 0, "mt": 1700000000, "mtn": 5,
     "size": 3},
    {"t": "cp_entry", "p": "l", "k": "l", "mode": 0o777, "uid": 0, "gid": 0, "mt": 0, "mtn": (1 << 30) - 2,
     "target": "/etc/hosts"},
    {"t": "cp_entry", "p": "sparse", "k": "f", "mode": 0o644, "uid": 0, "gid": 0, "mt": 0, "size": 1 << 32,
     "x": [4096, 4096, 1 << 31, 8192]},
    {"t": "cp_data", "d": b"abc"},
    {"t": "error", "msg": "no such file", "missing": True},
    {"t": "started", "id": 1, "pid": 42},
    {"t": "out", "s": 1, "d": b"hello\n"},
    {"t": "exit", "id": 1, "code": 0, "signal": 0, "timed_out": False},
    {"t": "exit", "code": 3},
    {"t": "running", "id": 1},
    {"t": "mux_ack", "n": 262144},
    {"t": "config", "cfg": {"main": {"argv": ["sh"]}, "hostname": "box"}},
    {"t": "log", "d": b"console\n"},
]

# The 13 cases of issue 10 that ended the agent, and their kin.
BAD = [
    {"t": "hello", "v": "1"},
    {"t": "hello", "v": 1, "min": "1"},
    {"t": "exec_status", "id": "1"},
    {"t": "kill", "sig": "KILL"},
    {"t": "resize", "rows": "24", "cols": 80},
    {"t": "attach", "start": "yes", "rows": [24]},
    {"t": "exec", "argv": "sh"},
    {"t": "exec", "argv": [1, 2]},
    {"t": "exec", "argv": ["true"], "rows": -1, "timeout_ms": "x"},
    {"t": "signal", "sig": 1.5},
    {"t": "mux_ack", "n": "1"},
    {"t": "out", "s": 3, "d": "text"},
    {"t": "cp_entry", "p": "../x", "k": "h", "mode": 0o10000, "target": "/abs"},
]


def deep(n):
    return b"\x82\xa1t\xa4ping\xa1x" + b"\x91" * n + b"\xc0"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    seeds = [pack(m) for m in VALID + BAD]
    seeds += [deep(31), deep(33), deep(4000)]  # run.sh caps inputs at 8 KiB
    hello = frame(pack(VALID[0]))
    seeds.append(hello + frame(pack(VALID[10])))                       # hello + exec pipelined
    seeds.append(hello + frame(pack(BAD[0])) + frame(pack({"t": "ping"})))
    seeds.append(frame(pack({"t": "mux_ack", "n": 4096}), 3) + frame(pack({"t": "close"}), 3))
    seeds.append(frame(pack({"t": "log", "d": b"x"}), 0) + frame(pack({"t": "exit", "code": 0}), 0))
    seeds.append(b"\xff\xff\xff\xff\x00\x00\x00\x00")                 # oversized header
    for s in seeds:
        name = hashlib.sha1(s).hexdigest()
        with open(os.path.join(out, name), "wb") as f:
            f.write(s)


if __name__ == "__main__":
    main()

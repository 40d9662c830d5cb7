#!/usr/bin/python3
"""Writes the seed corpus of tests/fuzz/dns_fuzz.cc: queries the box's DNS
proxy reads (plain, EDNS, a label holding a dot) and replies it reads from an
upstream (A records, a compressed CNAME chain, an OPT record, a pointer loop,
a forward pointer, a record past the end, a truncated reply):
    tests/fuzz/make_dns_corpus.py tests/fuzz/corpus/dns
"""
import hashlib
import os
import struct
import sys


def name(n):
    out = b""
    for label in n.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(id_, flags, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


def question(n, t=1):
    return name(n) + struct.pack(">HH", t, 1)


def rr(owner, t, ttl, rdata):
    return owner + struct.pack(">HHIH", t, 1, ttl, len(rdata)) + rdata


def seeds():
    q = question("allowed.test")
    yield header(0x1234, 0x0100) + q  # a query
    yield header(0x1234, 0x0100, ar=1) + q + b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)  # with EDNS
    yield header(1, 0x0100) + b"\x0callowed.test\0" + struct.pack(">HH", 1, 1)  # one label holding a dot
    ptr_q = b"\xc0\x0c"  # the question's name
    a = rr(ptr_q, 1, 300, bytes([198, 18, 0, 2]))
    yield header(0x1234, 0x8180, an=1) + q + a
    # CNAME allowed.test -> cdn.other.test, then its A record (compressed).
    cname_target = b"\x03cdn\x05other\x04test\0"
    at = 12 + len(q) + 12  # where the CNAME's rdata starts
    yield (header(7, 0x8180, an=2) + q + rr(ptr_q, 5, 60, cname_target) +
           rr(struct.pack(">H", 0xC000 | at), 1, 30, bytes([198, 18, 0, 6])))
    yield header(7, 0x8180, an=1, ar=1) + q + a + b"\0" + struct.pack(">HHIH", 41, 1232, 0x8000, 0)
    yield header(7, 0x8183) + q  # NXDOMAIN
    yield header(7, 0x8380) + q  # truncated
    loop = header(7, 0x8180, an=1) + q + b"\x01a\xc0" + bytes([12 + len(q)]) + struct.pack(">HHIH", 1, 1, 5, 4) + b"\1\2\3\4"
    yield loop  # a name whose pointer leads back into itself
    yield header(7, 0x8180, an=1) + q + b"\xc0\xff" + struct.pack(">HHIH", 1, 1, 5, 4) + b"\1\2\3\4"  # forward pointer
    yield header(7, 0x8180, an=1) + q + ptr_q + struct.pack(">HHIH", 1, 1, 5, 400) + b"\1\2\3\4"  # past the end
    yield header(7, 0x8180, an=3) + q + a  # counts more records than there are


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for s in seeds():
        with open(os.path.join(out, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)


main()

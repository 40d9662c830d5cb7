#!/usr/bin/python3
"""A minimal CRI client (crictl is not in Debian): one RuntimeService call.

    cri_client.py SOCKET METHOD [REQUEST_JSON]

The request is the method's request message as JSON (protobuf's JSON
mapping, field names as in cri.proto); the response is printed the same way.
A gRPC error prints its code and details on stderr and exits 1.

cri.proto is compiled at run time into a descriptor set (grpc_tools'
protoc) and the message classes are built from it: no generated code whose
protobuf runtime version must match.
"""
import json
import os
import sys
import tempfile

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE = "runtime.v1.RuntimeService"


def load_pool():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cri.pb")
        if protoc.main(["protoc", "-I" + HERE, "--descriptor_set_out=" + out, "cri.proto"]) != 0:
            sys.exit("cri_client: protoc failed on cri.proto")
        with open(out, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    return pool


def message_class(pool, name):
    desc = pool.FindMessageTypeByName(name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    sock, method = sys.argv[1], sys.argv[2]
    body = json.loads(sys.argv[3]) if len(sys.argv) == 4 else {}
    pool = load_pool()
    svc = pool.FindServiceByName(SERVICE)
    m = svc.methods_by_name.get(method)
    if m is None:
        sys.exit("cri_client: no method %s in cri.proto" % method)
    req_cls = message_class(pool, m.input_type.full_name)
    resp_cls = message_class(pool, m.output_type.full_name)
    req = json_format.ParseDict(body, req_cls())
    with grpc.insecure_channel("unix://" + sock) as ch:
        call = ch.unary_unary("/%s/%s" % (SERVICE, method), request_serializer=req_cls.SerializeToString,
                              response_deserializer=resp_cls.FromString)
        try:
            # A backstop only: containerd answers or fails; a hung call must
            # not hang the test.
            resp = call(req, timeout=float(os.environ.get("CRI_TIMEOUT", "120")))
        except grpc.RpcError as e:
            sys.stderr.write("cri_client: %s: %s: %s\n" % (method, e.code().name, e.details()))
            sys.exit(1)
    out = json_format.MessageToDict(resp, preserving_proto_field_name=True)
    # bytes fields are base64 in protobuf's JSON: an exec's output as text.
    for f in ("stdout", "stderr"):
        if method == "ExecSync":
            out[f] = getattr(resp, f).decode("utf-8", "replace")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

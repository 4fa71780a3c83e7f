#!/usr/bin/env python3
"""An independent gRPC client (grpc-core via PyPI grpcio) for the plugin's kubelet-facing sockets.

Compiles the project's .proto files with grpcio-tools, then calls, as the kubelet does:
registration GetInfo + NotifyRegistrationStatus, and DRA NodePrepareResources /
NodeUnprepareResources on v1 and v1beta1 for a claim the API server does not have. Every call is
made with the default channel options (grpc-core then sends the percent-encoded socket path as
:authority) and with :authority set to the raw socket path, its percent-encoded form and
localhost. Prints one JSON object with what each call returned; exits 1 if any check failed.

Usage: kubelet_client.py --proto-dir proto/proto --registration SOCK --dra SOCK --claim-uid UID
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import urllib.parse

import grpc
from grpc_tools import protoc

PROTOS = ["pluginregistration/v1/api.proto", "dra/v1/api.proto", "dra/v1beta1/api.proto"]


def compile_protos(proto_dir, out_dir):
    for proto in PROTOS:
        rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", proto])
        if rc != 0:
            raise SystemExit(f"protoc failed on {proto} (rc {rc})")
    sys.path.insert(0, out_dir)


def load(proto):
    base = proto[: -len(".proto")].replace("/", ".")
    return importlib.import_module(base + "_pb2"), importlib.import_module(base + "_pb2_grpc")


def channel(socket, authority):
    options = [] if authority is None else [("grpc.default_authority", authority)]
    return grpc.insecure_channel("unix://" + socket, options=options)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--registration", required=True)
    ap.add_argument("--dra", required=True)
    ap.add_argument("--claim-uid", required=True)
    ap.add_argument("--driver", default="multinic.dev")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    out_dir = tempfile.mkdtemp(prefix="multinic-grpc-")
    compile_protos(args.proto_dir, out_dir)
    reg_pb, reg_grpc = load(PROTOS[0])
    dra = {"v1": load(PROTOS[1]), "v1beta1": load(PROTOS[2])}

    authorities = {
        "default": None,
        "socket-path": args.registration,
        "percent-encoded": urllib.parse.quote(args.registration, safe=""),
        "localhost": "localhost",
    }
    results, failures = [], []

    def check(name, ok, detail):
        results.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok:
            failures.append(name)

    for label, authority in authorities.items():
        # Registration, as the kubelet's plugin watcher does it.
        try:
            with channel(args.registration, authority) as ch:
                stub = reg_grpc.RegistrationStub(ch)
                info = stub.GetInfo(reg_pb.InfoRequest(), timeout=args.timeout)
                check(
                    f"GetInfo[{label}]",
                    info.type == "DRAPlugin"
                    and info.name == args.driver
                    and info.endpoint == args.dra
                    and list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth",
                                                      "v1alpha1.DRAResourceHealth"],
                    {"type": info.type, "name": info.name, "endpoint": info.endpoint,
                     "supported_versions": list(info.supported_versions)},
                )
                stub.NotifyRegistrationStatus(reg_pb.RegistrationStatus(plugin_registered=True), timeout=args.timeout)
                check(f"NotifyRegistrationStatus[{label}]", True, "ok")
        except grpc.RpcError as e:
            check(f"registration[{label}]", False, f"{e.code()}: {e.details()}")

        # DRA service, both versions: a claim the API server does not know fails per claim.
        dra_authority = None if authority is None else (
            args.dra if label == "socket-path" else
            urllib.parse.quote(args.dra, safe="") if label == "percent-encoded" else authority)
        for version, (pb, pb_grpc) in dra.items():
            try:
                with channel(args.dra, dra_authority) as ch:
                    stub = pb_grpc.DRAPluginStub(ch)
                    claim = pb.Claim(namespace="default", uid=args.claim_uid, name="no-such-claim")
                    resp = stub.NodePrepareResources(pb.NodePrepareResourcesRequest(claims=[claim]), timeout=args.timeout)
                    entry = resp.claims.get(args.claim_uid)
                    check(
                        f"NodePrepareResources[{version},{label}]",
                        entry is not None and entry.error != "" and len(entry.devices) == 0
                        and list(resp.claims.keys()) == [args.claim_uid],
                        {"keys": list(resp.claims.keys()), "error": entry.error if entry else None},
                    )
                    resp = stub.NodeUnprepareResources(pb.NodeUnprepareResourcesRequest(claims=[claim]), timeout=args.timeout)
                    entry = resp.claims.get(args.claim_uid)
                    check(
                        f"NodeUnprepareResources[{version},{label}]",
                        entry is not None and entry.error == "",
                        {"keys": list(resp.claims.keys()), "error": entry.error if entry else None},
                    )
            except grpc.RpcError as e:
                check(f"dra[{version},{label}]", False, f"{e.code()}: {e.details()}")

    json.dump({"grpcio": grpc.__version__, "results": results, "failures": failures}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the gRPC stubs shipped in the `authd` package, from the repository's protos.

    python3 clients/python/regenerate_stubs.py          # rewrite src/authd/pb/
    python3 clients/python/regenerate_stubs.py --check  # exit 1 if they are stale

The stubs are generated with grpcio-tools at the version pinned in
requirements-dev.txt (the generated code names the protobuf and grpcio versions it
needs, which pyproject.toml's dependencies follow), and their imports are made
package-relative (`from authd.pb import auth_pb2`), so the installed package needs no
repository layout. The descriptors keep their file names (`auth/v1/auth.proto`), as
the server's reflection names them.
"""

import argparse
import difflib
import pathlib
import re
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTOS = ["auth/v1/auth.proto", "auth/v1/admin.proto"]
OUT = HERE / "src" / "authd" / "pb"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
# `from auth.v1 import auth_pb2 as x` (and the .pyi's `from auth.v1 import auth_pb2 as _x`).
IMPORT = re.compile(r"^from auth\.v1 import (\w+_pb2)", re.M)


def pinned_tools_version() -> str:
    for line in (HERE / "requirements-dev.txt").read_text().splitlines():
        if line.startswith("grpcio-tools=="):
            return line.split("==", 1)[1].strip()
    sys.exit("requirements-dev.txt pins no grpcio-tools version")


def generate() -> dict[str, str]:
    """The generated files, by name, as they are shipped."""
    try:
        import grpc_tools
        from grpc_tools import protoc
        from importlib.metadata import version
    except ImportError:
        sys.exit("grpcio-tools is missing: pip install -r clients/python/requirements-dev.txt")
    wanted, have = pinned_tools_version(), version("grpcio-tools")
    if have != wanted:
        sys.exit(
            f"grpcio-tools {have} is installed, the stubs are generated with {wanted}: "
            "pip install -r clients/python/requirements-dev.txt"
        )
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *PROTOS,
        ]
        if protoc.main(args) != 0:
            sys.exit("protoc failed")
        files = {}
        for path in sorted((pathlib.Path(tmp) / "auth" / "v1").iterdir()):
            if path.name.endswith(GENERATED_SUFFIXES):
                files[path.name] = IMPORT.sub(r"from authd.pb import \1", path.read_text())
        return files


def shipped() -> dict[str, str]:
    return {
        path.name: path.read_text()
        for path in sorted(OUT.iterdir())
        if path.name.endswith(GENERATED_SUFFIXES)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the shipped stubs are stale")
    args = parser.parse_args()
    fresh = generate()
    if args.check:
        current = shipped()
        if current == fresh:
            print(f"{len(fresh)} stubs in {OUT.relative_to(HERE)} match proto/")
            return
        for name in sorted(set(fresh) | set(current)):
            if fresh.get(name) != current.get(name):
                diff = difflib.unified_diff(
                    current.get(name, "").splitlines(),
                    fresh.get(name, "").splitlines(),
                    f"shipped/{name}",
                    f"generated/{name}",
                    lineterm="",
                    n=1,
                )
                print("\n".join(list(diff)[:40]))
        sys.exit(
            "the stubs in clients/python/src/authd/pb are stale: "
            "run python3 clients/python/regenerate_stubs.py"
        )
    for name in shipped():
        if name not in fresh:
            (OUT / name).unlink()
    for name, text in fresh.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(fresh)} stubs to {OUT}")


if __name__ == "__main__":
    main()

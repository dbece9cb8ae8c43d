#!/usr/bin/env python3
"""Checks the Envoy configuration in docs/envoy.md against Envoy's own protos.

There is no Envoy binary on the CI machine, so this checks what a proto can: the
first ```yaml block of docs/envoy.md is parsed as an
envoy.config.bootstrap.v3.Bootstrap with protobuf's JSON parser, so every field name,
every enum value, every type and every "@type" of a typed_config must exist in the
protos of the Envoy API version authd's `envoy-types` dependency was built from.
Envoy's own validation rules (protoc-gen-validate) and whether Envoy would start are
not checked.

The protos come from the envoy-types crate in cargo's registry (found with
`cargo metadata`, so cargo must have fetched the dependencies); they are compiled with
grpcio-tools into a temporary directory.
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "envoy.md"
# The configuration's message, and every message one of its typed_configs names.
ENTRY_POINTS = [
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
]
IMPORT = re.compile(r'^import\s+(?:public\s+|weak\s+)?"([^"]+)";', re.M)


def envoy_types_protos() -> pathlib.Path:
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    for package in json.loads(metadata.stdout)["packages"]:
        if package["name"] == "envoy-types":
            return pathlib.Path(package["manifest_path"]).parent / "proto"
    sys.exit("envoy-types is not a dependency of this workspace")


def closure(roots: list[pathlib.Path]) -> dict[str, pathlib.Path]:
    """Every proto the entry points import, transitively, by import path."""
    found: dict[str, pathlib.Path] = {}
    todo = list(ENTRY_POINTS)
    while todo:
        name = todo.pop()
        if name in found or name.startswith("google/protobuf/"):
            continue
        path = next((r / name for r in roots if (r / name).is_file()), None)
        if path is None:
            sys.exit(f"{name}: not in {', '.join(map(str, roots))}")
        found[name] = path
        todo.extend(IMPORT.findall(path.read_text()))
    return found


def compile_protos(protos: pathlib.Path, out: pathlib.Path) -> None:
    from grpc_tools import protoc  # grpcio-tools, installed by .ci/run

    roots = [d for d in sorted(protos.iterdir()) if d.is_dir()]
    files = closure(roots)
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    args = [f"-I{include}", *(f"-I{r}" for r in roots), f"--python_out={out}"]
    # In a process of its own: protoc's warnings about unused imports in Envoy's
    # protos are noise unless it fails.
    run = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *args, *sorted(files)],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"protoc failed on envoy-types' protos:\n{run.stderr}")


def config_yaml() -> str:
    text = DOC.read_text()
    match = re.search(r"^```yaml\n(.*?)^```", text, re.M | re.S)
    if not match:
        sys.exit(f"{DOC}: no ```yaml block")
    return match.group(1)


def main() -> None:
    import yaml

    with tempfile.TemporaryDirectory() as out:
        compile_protos(envoy_types_protos(), pathlib.Path(out))
        sys.path.insert(0, out)
        from google.protobuf import json_format
        import importlib

        for entry in ENTRY_POINTS:
            importlib.import_module(entry[: -len(".proto")].replace("/", ".") + "_pb2")
        from envoy.config.bootstrap.v3 import bootstrap_pb2

        config = yaml.safe_load(config_yaml())
        try:
            json_format.ParseDict(config, bootstrap_pb2.Bootstrap())
        except json_format.ParseError as err:
            sys.exit(f"{DOC}: the Envoy configuration does not parse as a Bootstrap: {err}")
    print(f"{DOC.relative_to(ROOT)}: the Envoy configuration parses as envoy.config.bootstrap.v3.Bootstrap")


if __name__ == "__main__":
    main()

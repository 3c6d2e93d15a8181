"""Generate the gRPC Python code from protos/ (never edited by hand).

Called by setup.py's build step and by `make gen-protos`; protoc writes absolute
imports (`from aragog.v1 import ...`), so the output folder is the one that holds
the `aragog` package.
"""

from __future__ import annotations

import pathlib
import sys

PROTO_ROOT = pathlib.Path(__file__).resolve().parent


def generate(package_dir: pathlib.Path) -> list[pathlib.Path]:
    """Write v1/*_pb2*.py(i) into the folder of the `aragog` package; return them."""
    import shutil
    import tempfile

    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(PROTO_ROOT.glob("aragog/v1/*.proto"))
    out_root = pathlib.Path(tempfile.mkdtemp(prefix="aragog-protos-"))
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on " + ", ".join(p.name for p in protos))
    generated = out_root / "aragog" / "v1"
    (generated / "__init__.py").write_text('"""Generated gRPC code for aragog.v1 (do not edit)."""\n')
    target = pathlib.Path(package_dir) / "v1"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(generated, target)
    shutil.rmtree(out_root, ignore_errors=True)
    return sorted(target.iterdir())


if __name__ == "__main__":
    # Dev use: python protos/generate.py [folder of the aragog package, default services/]
    target = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT.parent / "services"
    for f in generate(target):
        print(f)

"""Build steps pyproject.toml cannot declare: gRPC code generation and the Cython round."""

from __future__ import annotations

import pathlib
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "protos"))
from generate import generate  # noqa: E402


class BuildPyWithProtos(build_py):
    """Generate aragog/v1 from protos/ into the build (or, when editable, the source tree)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            generate(ROOT / "services")
        else:
            generate(pathlib.Path(self.build_lib) / "aragog")


extensions = cythonize(
    [
        Extension(
            "aragog.scheduler_ext._beam",
            ["scheduler_ext/_beam.pyx"],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"],
        )
    ],
    language_level="3",
)

setup(
    packages=[
        "aragog",
        "aragog.common",
        "aragog.policies",
        "aragog.router",
        "aragog.scheduler",
        "aragog.load_monitor",
        "aragog.executor",
        "aragog.pool",
        "aragog.workflows",
        "aragog.emulation",
        "aragog.routing",
        "aragog.training",
        "aragog.client",
        "aragog.scheduler_ext",
        "aragog.loadgen",
        "aragog.sim",
    ],
    ext_modules=extensions,
    cmdclass={"build_py": BuildPyWithProtos},
)

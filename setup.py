"""Build of hqshm's optional C module; everything else is declared in pyproject.toml.

The launcher module (csrc/, cffi API mode) is optional: without a C compiler or cffi the
package still installs, and hqshm.node.affinity falls back to a Python launcher and says why.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULE = "hqshm._hqaffinity"
HEADER = "csrc/hqaffinity.h"
SOURCE = "csrc/hqaffinity.c"


def cdef_of(header: str) -> str:
    """The header doubles as the cdef: cffi only needs it without its preprocessor lines."""
    return "\n".join(line for line in header.splitlines() if not line.lstrip().startswith("#"))


class CffiBuildExt(build_ext):
    """Writes the cffi wrapper source next to the objects, then compiles it with csrc/.

    The extension is `optional`, so setuptools turns a compiler failure into a warning; a
    missing cffi is reported the same way here.
    """

    def build_extension(self, ext: Extension) -> None:
        if ext.name == MODULE:
            try:
                import cffi
            except ImportError as exc:
                self.warn(f"skipping {MODULE}: cffi is unavailable ({exc})")
                return
            ffi = cffi.FFI()
            ffi.cdef(cdef_of(Path(HEADER).read_text()))
            ffi.set_source(MODULE, '#include "hqaffinity.h"')
            generated = Path(self.build_temp) / "_hqaffinity.c"
            generated.parent.mkdir(parents=True, exist_ok=True)
            ffi.emit_c_code(str(generated))
            ext.sources = [str(generated), SOURCE]
        super().build_extension(ext)


setup(
    ext_modules=[
        Extension(
            MODULE,
            sources=[SOURCE],
            depends=[HEADER],
            include_dirs=["csrc"],
            define_macros=[("_GNU_SOURCE", None)],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": CffiBuildExt},
)

"""uv, which builds the local environments that stand in for images and runtimes (the jobs image's
environment, the functions' runtimes and packages)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

# Bytecode compiled at install, as pip leaves it in the jobs image and `sam build` in a function's
# package: PYTHONDONTWRITEBYTECODE (Makefile) keeps processes from writing it later, so without it
# every job host, Ray worker and Lambda invocation compiles its imports from source (Ray ~7 s
# instead of ~2).
COMPILED_INSTALL_FLAGS = ("--compile-bytecode",)


def find_uv() -> Path | None:
    """uv next to the running interpreter (`make venv` installs it into .venv/bin), else on PATH."""
    for candidate in (Path(sys.executable).parent / "uv", shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None

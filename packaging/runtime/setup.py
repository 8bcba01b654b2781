"""Build siamkit-runtime from the siamkit source tree: only the modules in modules.txt."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
MODULES = {line.strip() for line in (HERE / "modules.txt").read_text().splitlines()
           if line.strip() and not line.startswith("#")}  # fmt: skip


class TorchFreeModules(build_py):
    """build_py that keeps the listed modules of each package (a package is its __init__)."""

    def find_package_modules(self, package, package_dir):
        found = super().find_package_modules(package, package_dir)
        return [m for m in found
                if (m[0] if m[1] == "__init__" else f"{m[0]}.{m[1]}") in MODULES]  # fmt: skip


shutil.rmtree(HERE / "build", ignore_errors=True)  # no module left over from an earlier list
setup(cmdclass={"build_py": TorchFreeModules}, options={"egg_info": {"egg_base": str(HERE)}})

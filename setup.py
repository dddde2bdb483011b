"""The compiled hot path: mypyc builds the modules `protocol/_compiled.py` lists.

Everything else about the package is in pyproject.toml. `RTMP2_PURE_BUILD=1` builds no
extension (the package then runs its pure-Python modules); a failed compile fails the install.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import setup

here = Path(__file__).resolve().parent
ext_modules = []
if os.environ.get("RTMP2_PURE_BUILD", "") in ("", "0"):
    from mypyc.build import mypycify

    # The list is read from the module rather than imported: importing the package at build
    # time would need its dependencies in the build environment.
    listing = (here / "src/rtmp2server/protocol/_compiled.py").read_text()
    names = re.search(r"^COMPILED = \(([^)]*)\)", listing, re.M)
    assert names is not None, "protocol/_compiled.py: COMPILED not found"
    modules = [f"src/rtmp2server/protocol/{n}.py" for n in re.findall(r'"(\w+)"', names[1])]
    # separate=True: one shared library per module, beside it in its package (with one group
    # for all, mypyc puts a hash-named library at the top level of site-packages).
    # Flags, not pyproject's [tool.mypy]: that checks the whole package, whose HTTP side needs
    # aiohttp, which the isolated build environment does not have. Only imports of the listed
    # modules are followed, and they import only the protocol package.
    flags = ["--config-file=", "--strict", "--python-version=3.11", "--follow-imports=silent"]
    ext_modules = mypycify([*flags, *modules], opt_level="3", separate=True)

setup(ext_modules=ext_modules)

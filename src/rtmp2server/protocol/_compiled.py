"""Which of the protocol's hot-path modules run compiled, and the switch that forces them pure.

The package's install compiles `COMPILED` with mypyc (see `setup.py`): the extension module
(`chunk.cpython-311-x86_64-linux-gnu.so`) sits beside its source (`chunk.py`) under the same
name, and Python's import system prefers an extension module to a source file in the same
directory, so the compiled module is the one imported whenever it is there. The `.py` sources
stay the reference: they are what mypyc compiles, what runs where nothing was built, and what
`RTMP2_PURE=1` in the environment forces (a finder put in front of the import system, before
any of these modules is imported, that loads the source file instead). In a source
checkout, an extension older than its source (edited after an editable install built it) is
not used.

The compiled modules run together or not at all: mypyc compiles a native class (`Message`) into
one C type, which the compiled modules that use it (`chunk`, `flv`) make and take directly, so
they need the compiled module that defines it, never its source. One stale extension makes them
all run their sources.

`implementation(module)` says which one a loaded module is; `load(name, compiled=...)` loads
one of the two explicitly, for the tests that compare them (the differential fuzz) and the
micro-benchmark, without disturbing the module the rest of the process uses.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE = __name__.rpartition(".")[0]
# The modules mypyc compiles, by name within this package (setup.py reads this list).
COMPILED = ("chunk", "client", "connection", "endpoint", "flv", "messages")
PURE_ENV = "RTMP2_PURE"
_DIR = Path(__file__).resolve().parent


def forced_pure() -> bool:
    """Whether the environment asks for the pure-Python modules (`RTMP2_PURE=1`)."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def source_path(name: str) -> Path:
    return _DIR / f"{name}.py"


def extension_path(name: str) -> Path | None:
    """The built extension module of `name` beside its source, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _DIR / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def implementation(module: ModuleType) -> str:
    """ "compiled" or "pure": which of the two `module` is."""
    file = getattr(module, "__file__", None) or ""
    return "pure" if file.endswith(".py") else "compiled"


def implementations() -> dict[str, str]:
    """Each compiled-capable module as imported in this process: "compiled" or "pure"."""
    out = {}
    for name in COMPILED:
        out[name] = implementation(importlib.import_module(f"{PACKAGE}.{name}"))
    return out


def stale() -> list[str]:
    """The modules whose extension is missing, or, in a source checkout (an editable install,
    which compiles once; `scripts/setup.sh` compiles again), older than its source. An
    installed copy's file times say nothing (pip sets them as it unpacks)."""
    checkout = (_DIR.parents[2] / "pyproject.toml").exists()  # src/rtmp2server/protocol
    out = []
    for name in COMPILED:
        ext = extension_path(name)
        if ext is None:
            out.append(name)
        elif checkout:
            # The extension is a small loader of the library mypyc built the code into
            # (`<name>__mypyc`); a rebuild may rewrite only the library.
            lib = extension_path(f"{name}__mypyc")
            built = max(p.stat().st_mtime for p in (ext, lib) if p is not None)
            if built < source_path(name).stat().st_mtime:
                out.append(name)
    return out


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the modules in `names` as their source files (`compiled=False`: ahead of their
    extension modules) or as their extension modules (while `load` loads one)."""

    def __init__(self, names: Sequence[str], *, compiled: bool) -> None:
        self.names = frozenset(names)
        self.compiled = compiled

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in self.names:
            return None
        if not self.compiled:
            return importlib.util.spec_from_file_location(fullname, source_path(name))
        ext = extension_path(name)
        if ext is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(ext))
        return importlib.util.spec_from_file_location(fullname, ext, loader=loader)


def install() -> None:
    """Called by the package on import: with `RTMP2_PURE=1`, a finder in front that loads
    the sources; without, the same for an extension older than its source (it would run code
    that is no longer there) or a missing one beside built ones, with a warning that names it,
    for all of them: a compiled module needs the compiled modules it uses (see above)."""
    names = [n for n in COMPILED if extension_path(n) is not None]
    if names and not forced_pure():
        unusable = stale()
        if unusable:
            warnings.warn(
                f"{PACKAGE}: the compiled {', '.join(unusable)} is missing or older than its "
                "source; running the sources (scripts/setup.sh or pip install -e . rebuilds "
                "them)",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            names = []
    if names and not any(isinstance(f, _Finder) and not f.compiled for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(names, compiled=False))


def load(name: str, *, compiled: bool) -> ModuleType:
    """A fresh copy of module `name`, compiled or pure, whatever the process imports.

    The pure one is loaded from its source under a name of its own (`_pure_<name>`, in this
    package and in `sys.modules`, so that its relative imports resolve to the modules the
    process uses). The compiled one can only be loaded under its own name: it is the process's
    one, or, when the process runs the sources, imported with the process's sources of these
    modules out of the way and the extensions found first, so that the modules it imports of
    these are compiled too (it uses their native classes); the process's modules are put back
    afterwards. Raises `ImportError` when the compiled module was not built."""
    fullname = f"{PACKAGE}.{name}"
    if not compiled:
        spec = importlib.util.spec_from_file_location(f"{PACKAGE}._pure_{name}", source_path(name))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it runs
        spec.loader.exec_module(module)
        return module
    current = sys.modules.get(fullname)
    if current is not None and implementation(current) == "compiled":
        return current
    if extension_path(name) is None:
        raise ImportError(f"{fullname}: no compiled module beside {source_path(name)}")
    package = sys.modules[PACKAGE]
    modules = {n: sys.modules.get(f"{PACKAGE}.{n}") for n in COMPILED}
    attributes = {n: package.__dict__.get(n) for n in COMPILED}
    for n, loaded in modules.items():
        if loaded is not None and implementation(loaded) == "pure":
            del sys.modules[f"{PACKAGE}.{n}"]
    finder = _Finder(COMPILED, compiled=True)
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module(fullname)
    finally:
        # Importing registers a module under its name and as its package's attribute: put the
        # process's back.
        sys.meta_path.remove(finder)
        for n, loaded in modules.items():
            if loaded is None:
                sys.modules.pop(f"{PACKAGE}.{n}", None)
            else:
                sys.modules[f"{PACKAGE}.{n}"] = loaded
        for n, value in attributes.items():
            if value is None:
                package.__dict__.pop(n, None)
            else:
                setattr(package, n, value)

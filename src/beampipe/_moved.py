"""Module paths that moved, kept importable for one release with a ``DeprecationWarning``.

An old package calls :func:`alias_modules` in its ``__init__`` with a table ``{old module name:
new module paths}``. From then on ``import package.old`` (also ``from package.old import Name``,
``importlib.import_module`` and ``use: package.old:Class`` in a pipeline file) warns once, naming
the new path, and gives a small module whose public attributes are those of the new module(s),
looked up on use: ``package.old.Class is new.Class``. An old module that was split into several
names them all; an attribute is taken from the first that has it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads the old module names of one package (a finder on ``sys.meta_path``)."""

    def __init__(self, package: str, moved: Mapping[str, Sequence[str]]) -> None:
        self.package = package
        self.moved = moved

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != self.package or name not in self.moved:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default: an empty module

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        paths = self.moved[old.rpartition(".")[2]]
        where = ", ".join(paths[:-1]) + " and " + paths[-1] if len(paths) > 1 else paths[0]
        warnings.warn(
            f"{old} has moved to {where}; the old path will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,  # the import statement (warnings skips the import system's frames)
        )
        targets = [importlib.import_module(path) for path in paths]

        def __getattr__(name: str) -> Any:
            if not name.startswith("__"):
                for target in targets:
                    if hasattr(target, name):
                        return getattr(target, name)
            raise AttributeError(f"module {old!r} has no attribute {name!r}")

        module.__getattr__ = __getattr__
        module.__all__ = [n for t in targets for n in getattr(t, "__all__", ())]
        module.__doc__ = f"Moved to {where} (deprecated)."


def alias_modules(package: str, moved: Mapping[str, Sequence[str]]) -> None:
    """Make ``package.OLD`` import as the module(s) ``moved[OLD]`` for every OLD (see the module
    doc). Call it once, from ``package``'s ``__init__``."""
    sys.meta_path.append(_Aliases(package, moved))

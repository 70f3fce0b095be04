"""Who may import whom (../shared/ARCHITECTURE.md), read from the source with `ast`.

Every `import` and `from ... import` counts, also those inside functions: a lazy import is still
a dependency. Each rule names the offending file and line, so a later change that breaks the
layering fails here with the place to fix.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT_FOLDERS = ("tools", "visualization")
# The scripts' own helpers, found on sys.path next to them: a script may import these.
SCRIPT_HELPERS = {"tools": {"cli", "_init_paths"}, "visualization": {"_init_paths", "report"}}
GROUND_FLOOR = ("lib.utils", "lib.config", "lib.spacecraft")
# Third-party packages the spacecraft floor may use besides the standard library.
SPACECRAFT_THIRD_PARTY = {"numpy", "cv2", "scipy"}


def module_name(path: Path) -> str:
    """'lib/utils/io.py' -> 'lib.utils.io'; a package's __init__ is the package itself."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # `from lib.x import y` may import the module lib.x.y: count both names.
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def within(name: str, *packages: str) -> bool:
    """Is the module `name` one of `packages` or below one of them?"""
    return any(name == p or name.startswith(p + ".") for p in packages)


def script_names(folder: str) -> set[str]:
    """The names a script of `folder` is importable under (it sits on sys.path)."""
    return {p.stem for p in (REPO / folder).glob("*.py")}


def assert_no_import(folder: str, forbidden: Callable[[str], bool]) -> None:
    """Fail with one 'file:line imports module' line per import statement that `forbidden`
    refuses (its first refused name)."""
    found: dict[str, str] = {}
    for path in sources(folder):
        for line, name in imports_of(path):
            if forbidden(name):
                found.setdefault(f"{path.relative_to(REPO)}:{line}", name)
    assert not found, "forbidden imports:\n" + "\n".join(
        f"{place} imports {name}" for place, name in found.items())


def lib_in(name: str) -> bool:
    """A module of lib (the bare package `lib`, as in `from lib import x`, counts as none)."""
    return name != "lib" and within(name, "lib")


def test_the_import_reader_sees_lazy_and_relative_imports():
    source = "import os\ndef f():\n    from ..core import loss\n    import torch.nn\n"
    found = list(imports_in(source, "lib.dataset.sample", is_package=False))
    assert found == [(1, "os"), (3, "lib.core"), (3, "lib.core.loss"), (4, "torch.nn")]
    found = list(imports_in("from . import files", "lib.spacecraft", is_package=True))
    assert found == [(1, "lib.spacecraft"), (1, "lib.spacecraft.files")]


def test_spacecraft_uses_numpy_opencv_scipy_stdlib_and_lib_utils_only():
    def forbidden(name: str) -> bool:
        top = name.split(".")[0]
        if top == "lib":
            return lib_in(name) and not within(name, "lib.spacecraft", "lib.utils")
        return top not in SPACECRAFT_THIRD_PARTY and top not in sys.stdlib_module_names

    assert_no_import("lib/spacecraft", forbidden)


def test_utils_import_nothing_else_from_lib():
    def forbidden(name: str) -> bool:
        return lib_in(name) and not within(name, "lib.utils")

    assert_no_import("lib/utils", forbidden)


def test_config_imports_only_config_and_utils():
    def forbidden(name: str) -> bool:
        return lib_in(name) and not within(name, "lib.config", "lib.utils")

    assert_no_import("lib/config", forbidden)


@pytest.mark.parametrize("package", ["nms", "models"])
def test_nms_and_models_import_only_themselves_and_the_ground_floor(package):
    def forbidden(name: str) -> bool:
        return lib_in(name) and not within(name, f"lib.{package}", *GROUND_FLOOR)

    assert_no_import(f"lib/{package}", forbidden)


def test_datasets_never_import_the_engine():
    def forbidden(name: str) -> bool:
        return lib_in(name) and not within(name, "lib.dataset", "lib.nms", *GROUND_FLOOR)

    assert_no_import("lib/dataset", forbidden)


def test_lib_never_imports_tools_tests_or_visualization():
    script_modules = {*script_names("tools"), *script_names("visualization"),
                      *script_names("tests")}

    def forbidden(name: str) -> bool:
        top = name.split(".")[0]
        return top in {"tools", "tests", "visualization"} or top in script_modules

    assert_no_import("lib", forbidden)


def test_lib_never_reads_the_command_line():
    """Arguments are parsed in tools/ and reach lib as values: lib never reads sys.argv."""
    found = [f"{path.relative_to(REPO)}:{node.lineno}" for path in sources("lib")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr == "argv"
             and isinstance(node.value, ast.Name) and node.value.id == "sys"]
    found += [f"{path.relative_to(REPO)}:{line}" for path in sources("lib")
              for line, name in imports_of(path) if name == "sys.argv"]
    assert not found, "sys.argv read in lib:\n" + "\n".join(found)


@pytest.mark.parametrize("folder", SCRIPT_FOLDERS)
def test_scripts_import_lib_and_their_own_helpers_only(folder):
    """A tool never imports another tool, a visualization script or a test module."""
    others = ({"tools", "tests", "visualization"} | script_names("tests")
              | script_names("tools") | script_names("visualization")) - SCRIPT_HELPERS[folder]

    def forbidden(name: str) -> bool:
        return name.split(".")[0] in others

    assert_no_import(folder, forbidden)


@pytest.mark.parametrize("module", sorted(module_name(p) for p in sources("lib/spacecraft")))
def test_spacecraft_module_loads_without_torch(module):
    """In a fresh interpreter: importing it loads no torch and nothing above the ground floor,
    so scoring a submission starts fast."""
    probe = (f"import sys, {module}\n"
             "print(sorted({n.split('.')[0] if not n.startswith('lib.') else "
             "'.'.join(n.split('.')[:2]) for n in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    loaded = set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
    assert "torch" not in loaded
    assert not loaded & {"lib.dataset", "lib.core", "lib.models", "lib.nms"}

"""The layers' contract, read from the source: engine/ never imports the UI, widgets never import screens,
and the command groups of `lmwb` (tui/cli/*_commands.py) never import one another.

An AST scan of every module's imports (top level and inside functions), so
a lazy import cannot slip past it the way it would past importing the module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# package directory -> module prefixes it must never import, and why
FORBIDDEN = {
    "engine": (
        ("tui", "textual", "rich.live", "rich.progress", "rich.console"),
        "the engine is a library: the app and the CLI ask it, never the other way round",
    ),
    "tui/widgets": (("tui.screens", "tui.app"), "widgets are reused by screens; a widget that knows its screen is not"),
}


def package_of(path: Path) -> str:
    """The dotted package a file of the repository is in ("engine" for engine/store.py)."""
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, relative imports made absolute within ``package``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found += [
                (node.lineno, f"{module}.{alias.name}" if node.level and not node.module else module)
                for alias in node.names
            ]
    return sorted(found)


@pytest.mark.parametrize("directory", FORBIDDEN)
def test_no_module_crosses_the_layers(directory: str) -> None:
    prefixes, why = FORBIDDEN[directory]
    files = sorted((REPO_ROOT / directory).rglob("*.py"))
    assert files, f"no Python files under {directory}"
    crossings = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
        for path in files
        for line, module in imported_modules(path, package_of(path))
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)
    ]
    assert not crossings, f"{directory} must not import {', '.join(prefixes)} ({why}):\n" + "\n".join(crossings)


def test_the_command_groups_of_lmwb_never_import_one_another() -> None:
    """tui/cli/: a group of commands imports what the groups share (common, output, progress), never another
    group nor the package (whose __init__ imports every group), so each group reads on its own and none cycles."""
    package = REPO_ROOT / "tui" / "cli"
    groups = {f"tui.cli.{path.stem}" for path in package.glob("*_commands.py")}
    assert groups, "no command groups under tui/cli"
    crossings = [
        f"{path.relative_to(REPO_ROOT)}:{line} imports {module}"
        for path in sorted(package.glob("*.py"))
        if path.stem not in ("__init__", "__main__")
        for line, module in imported_modules(path, "tui.cli")
        if module in (groups | {"tui.cli"}) - {f"tui.cli.{path.stem}"}
    ]
    assert not crossings, "a module of tui/cli imports a command group or the package:\n" + "\n".join(crossings)


def test_the_scan_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(
        "def f():\n    from tui.app import WorkbenchApp\n    import textual.app\n"
        "from ..screens import runs\nfrom .formatting import human_bytes\n",
        encoding="utf-8",
    )
    assert [name for _, name in imported_modules(module, "tui.widgets")] == [
        "tui.app",
        "textual.app",
        "tui.screens",
        "tui.widgets.formatting",
    ]


ARCHITECTURE_PAGE = REPO_ROOT / "docs" / "architecture.md"
USERS_OF_THE_ENGINE = ("engine", "tui", "bench", "scripts")


def engine_names_used_elsewhere() -> dict[str, set[str]]:
    """engine module ("engine/store.py") -> the names other modules and bench/ import from it."""
    used: dict[str, set[str]] = {}
    for directory in USERS_OF_THE_ENGINE:
        for path in sorted((REPO_ROOT / directory).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("engine.")):
                    continue
                source = node.module.replace(".", "/") + ".py"
                if path.relative_to(REPO_ROOT).as_posix() != source:
                    used.setdefault(source, set()).update(alias.name for alias in node.names)
    return used


def page_sections() -> dict[str, str]:
    """engine module -> the text of its section ("### `engine/store.py`") on docs/architecture.md."""
    sections: dict[str, str] = {}
    module = None
    in_code = False
    for line in ARCHITECTURE_PAGE.read_text(encoding="utf-8").splitlines():
        in_code ^= line.startswith("```")
        if line.startswith("#") and not in_code:
            module = line.split("`")[1] if line.startswith("### `engine/") else None
            sections.setdefault(module or "", "")
        elif module:
            sections[module] += line + "\n"
    return sections


def test_the_architecture_page_names_every_engine_name_used_across_modules() -> None:
    sections = page_sections()
    missing = []
    for module, names in sorted(engine_names_used_elsewhere().items()):
        text = sections.get(module)
        if text is None:
            missing.append(f"{module}: no section on the page")
            continue
        missing += [f"{module}: {name}" for name in sorted(names) if not re.search(rf"\b{re.escape(name)}\b", text)]
    assert not missing, "docs/architecture.md should name these (used by other modules or bench/):\n" + "\n".join(
        missing
    )

"""The layers' contract, read from the source: engine/ never imports the UI, and widgets never import screens.

An AST scan of every module's imports (top level and inside functions), so
a lazy import cannot slip past it the way it would past importing the module.
"""

from __future__ import annotations

import ast
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

"""The shape of the code: one place per concept, no import circle, a fast start.

These are the properties a new kind of data or a new command must keep: only the task modules
know the kinds of data, no module of the app imports one that imports it back, and the
`sequnet` command starts without importing torch.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sequnet_cli"
TASK_MODULES = PACKAGE / "tasks"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The sequnet_cli modules `path` imports when it runs (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for child in block.body
        for node in ast.walk(child)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in names if name in modules} - {module_name(path)}


def test_only_task_modules_switch_on_the_kind_of_data() -> None:
    pattern = re.compile(r"\b(task|kind)\s*==|==\s*\"(audio|piano-roll)\"")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if TASK_MODULES not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = {module_name(path): runtime_imports(path) for path in PACKAGE.rglob("*.py")}

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), list(graph.get(start, ()))
        while stack:
            name = stack.pop()
            if name == goal:
                return True
            if name not in seen:
                seen.add(name)
                stack.extend(graph.get(name, ()))
        return False

    # A package's __init__ runs before its submodules, so importing a submodule imports its
    # parent package too; that edge is Python's, not a design choice.
    circles = sorted(
        f"{module} <-> {imported}"
        for module, imports in graph.items()
        for imported in imports
        if not module.startswith(imported + ".") and reaches(imported, module)
    )
    assert circles == []


def test_the_console_knows_nothing_of_the_rest_of_the_app() -> None:
    assert runtime_imports(PACKAGE / "console.py") == set()


def test_long_modules_say_why_at_the_top() -> None:
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        if len(lines) > 500:
            docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "long" in docstring.lower(), f"{path} has {len(lines)} lines and no reason"


def test_starting_the_app_imports_no_torch() -> None:
    code = "import sys, sequnet_cli.app; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_version_and_help_run_without_torch() -> None:
    code = (
        "import sys\n"
        "from sequnet_cli.app import main\n"
        "for args in (['--version'], ['--help'], ['train', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as done:\n"
        "        assert not done.code, (args, done.code)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"

"""The package's arrows point one way: processing knows nothing of the model, the env nothing of its expert."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def modules_loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return set(done.stdout.split())


def imports_in(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module, forbidden", [
    ("robovla.processing", "robovla.model"),
    ("robovla.config", "robovla.model"),
    ("robovla.client", "torch"),
])
def test_importing_a_module_loads_nothing_above_it(module, forbidden):
    loaded = modules_loaded_by(module)
    assert module in loaded
    assert not {m for m in loaded if m == forbidden or m.startswith(forbidden + ".")}, f"{module} loads {forbidden}"


@pytest.mark.parametrize("folder, forbidden", [("processing", "robovla.model"), ("sim/env.py", "robovla.sim.expert")])
def test_no_import_points_back_up(folder, forbidden):
    root = SRC / "robovla" / folder
    for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
        offending = {name for name in imports_in(path) if name == forbidden or name.startswith(forbidden + ".")}
        assert not offending, f"{path.relative_to(SRC)} imports {sorted(offending)}"

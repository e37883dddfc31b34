"""The tree is lint-clean, formatted, and its imports keep the layers of pyproject.toml's import-linter contracts."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUFF = shutil.which("ruff") or str(BIN / "ruff")


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(args):
    result = subprocess.run([RUFF, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_keep_the_layers():
    result = subprocess.run([str(BIN / "lint-imports")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_no_function_is_longer_than_60_lines_outside_bench_and_tests():
    """The house rule: a function that does not fit on a screen is two functions. (No linter we use counts lines;
    ruff's PLR0915 counts statements, which lets a long chain of calls through.)"""
    import ast

    long = []
    for folder in ("jobs", "models", "serve"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > 60:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "\n".join(long)

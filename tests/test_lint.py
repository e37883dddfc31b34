import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RUFF = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff_is_clean(args):
    result = subprocess.run([RUFF, *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

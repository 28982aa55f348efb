"""Every Python block of the README runs as written when copied (issue 17: `...` placeholders failed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    code = BLOCKS[index]
    assert "..." not in code.replace("…", ""), "placeholder in a README code block"
    script = tmp_path / f"readme_{index}.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_project_files_and_the_architecture_map_are_in_the_repository():
    import tomllib

    root = README.parent
    text = README.read_text()
    assert "](docs/architecture.md)" in text and "../shared/DESIGN.md" not in text
    assert (root / "docs" / "architecture.md").read_text().startswith("# kgml architecture map")
    licence = tomllib.loads((root / "pyproject.toml").read_text())["project"]["license"]["text"]
    assert licence == "Apache-2.0" and "Apache License" in (root / "LICENSE").read_text()[:200]
    assert "license: Apache-2.0" in (root / "CITATION.cff").read_text()
    assert "## [Unreleased]" in (root / "CHANGELOG.md").read_text()

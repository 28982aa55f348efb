"""The documentation site builds with warnings as errors, and its generated pages say what the code says."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_MISSING = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers") if importlib.util.find_spec(m) is None]
needs_mkdocs = pytest.mark.skipif(bool(_MISSING), reason=f"docs tool not installed ({', '.join(_MISSING)}); "
                                  "pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)
    warnings = [ln for ln in proc.stderr.splitlines() if "WARNING" in ln or "ERROR" in ln]
    assert proc.returncode == 0 and not warnings, "mkdocs build --strict failed:\n" + "\n".join(
        warnings or proc.stderr.splitlines()[-20:])
    return out


@pytest.mark.slow
@needs_mkdocs
def test_docs_build_strict_with_generated_references(site):
    from kgml.cli import iter_commands
    from kgml.config import _SECTION_NAMES

    config_page = (site / "config" / "index.html").read_text(encoding="utf-8")
    for cls, section in _SECTION_NAMES.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                assert f"<code>{f.name}</code>" in config_page, f"config reference lacks [{section}] {f.name}"
    cli_page = (site / "cli" / "index.html").read_text(encoding="utf-8")
    for words, _ in iter_commands():
        assert f"kgml {' '.join(words)}" in cli_page, f"command reference lacks kgml {' '.join(words)}"
    api = (site / "api" / "runs" / "index.html").read_text(encoding="utf-8")
    assert "load_config" in api and "run_experiment" in api  # docstrings rendered, not only headings
    assert (site / "architecture" / "index.html").is_file()
    quick = (site / "quickstart" / "index.html").read_text(encoding="utf-8")
    assert "configs/tower_warmwinter.toml" in quick  # the README's real-data section is included


def test_readme_sections_the_docs_include_exist():
    """The hook's include markers name README headings that exist (a renamed heading fails here, not only
    when the docs tool is installed)."""
    import re

    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from hooks import readme_section
    finally:
        sys.path.pop(0)
    markers = [m for page in (ROOT / "docs").rglob("*.md")
               for m in re.findall(r'<!-- kgml:include (\S+) "([^"]+)" -->', page.read_text(encoding="utf-8"))]
    assert markers
    for file, heading in markers:
        assert readme_section(file, heading).strip(), (file, heading)
    with pytest.raises(ValueError, match="no heading"):
        readme_section("README.md", "## No such heading")

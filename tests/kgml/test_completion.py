"""`kgml completion bash|zsh`: the script is generated from the parsers, is valid shell, and completes
commands, sub-commands, options and option choices the way the command line defines them."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from kgml.cli import build_parser, iter_commands, main
from kgml.cli.completion import completion_script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def _complete(script: str, words: list[str]) -> list[str]:
    cword = len(words) - 1
    arr = " ".join(f"'{w}'" for w in words)
    code = f'{script}\nCOMP_WORDS=({arr}); COMP_CWORD={cword}; _kgml; printf "%s\\n" "${{COMPREPLY[@]}}"'
    out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    assert not out.stderr, out.stderr
    return [w for w in out.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def script():
    return completion_script(build_parser(), "bash")


def test_the_script_is_valid_bash_and_the_command_prints_it(script, capsys):
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == script
    assert main(["completion", "zsh"]) == 0
    assert "bashcompinit" in capsys.readouterr().out


def test_it_completes_what_the_parsers_define(script):
    top = {w[0] for w, _ in iter_commands() if len(w) == 1}
    assert set(_complete(script, ["kgml", ""])) == top
    assert _complete(script, ["kgml", "ben"]) == ["bench"]
    assert set(_complete(script, ["kgml", "bench", ""])) == {"shift", "summary"}
    assert "--suite" in _complete(script, ["kgml", "bench", "shift", "--su"])
    from kgml.compare.suites import SUITES
    assert set(_complete(script, ["kgml", "bench", "shift", "--suite", ""])) == set(SUITES)
    # an option of another command is not offered here
    assert "--suite" not in _complete(script, ["kgml", "train", "--"])

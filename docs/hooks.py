"""mkdocs hooks of the kgml documentation: pages are written with markers that are replaced, at build time,
by text generated from the code, so that the site cannot drift from it.

``<!-- kgml:config-reference -->``
    every config section and key (`kgml.config.config_reference_markdown`, from the config dataclasses);
``<!-- kgml:cli-reference -->``
    the ``--help`` of every ``kgml`` subcommand (`kgml.cli.iter_commands`);
``<!-- kgml:include README.md "## Heading" -->``
    one section of the README (up to the next heading of the same or a higher level), so the README's
    prose is not copied into the docs; links into ``docs/`` are made relative to the site, links to other
    repository files become code spans (they are not part of the site).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_INCLUDE = re.compile(r'<!-- kgml:include (\S+) "([^"]+)" -->')
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def readme_section(file: str, heading: str) -> str:
    """The lines of ``heading``'s section of ``file`` (relative to the repository root), heading excluded."""
    lines = (ROOT / file).read_text(encoding="utf-8").splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        raise ValueError(f"docs: {file} has no heading {heading!r} (the docs include it)") from None
    end = len(lines)
    fence = False
    for i in range(start + 1, len(lines)):
        fence ^= lines[i].startswith("```")
        hashes = len(lines[i]) - len(lines[i].lstrip("#"))
        if not fence and 0 < hashes <= level and lines[i][hashes:hashes + 1] == " ":
            end = i
            break
    return "\n".join(lines[start + 1:end]).strip() + "\n"


def _relink(text: str) -> str:
    def fix(m):
        bang, label, target = m.groups()
        if re.match(r"^[a-z]+://|^#|^mailto:", target):
            return m.group(0)
        if target.startswith("docs/"):
            return f"{bang}[{label}]({target[len('docs/'):]})"
        return f"`{target}`" if bang else f"{label} (`{target}`)"

    return _LINK.sub(fix, text)


def cli_reference() -> str:
    """Markdown: the ``--help`` text of every subcommand, in a fixed width."""
    os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal; the page must not depend on it
    from kgml.cli import build_parser, iter_commands

    parser = build_parser()
    out = []
    for words, sub in iter_commands(parser):
        name = " ".join(words)
        text = sub.format_help().replace("```", "'''")
        out += [f"### `kgml {name}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- kgml:config-reference -->" in markdown:
        from kgml.config import config_reference_markdown

        markdown = markdown.replace("<!-- kgml:config-reference -->", config_reference_markdown(2))
    if "<!-- kgml:cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- kgml:cli-reference -->", cli_reference())
    return _INCLUDE.sub(lambda m: _relink(readme_section(m.group(1), m.group(2))), markdown)

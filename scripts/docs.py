"""Regenerate the generated parts of README.md and docs/: nothing there is copied by hand, so nothing can go stale.

Two kinds of block, each between an opening and a closing HTML comment that this script owns:

- ``<!-- options: clidep NAME -->`` ... ``<!-- end options -->``: the command's usage and options
  table, read from the same Typer command that ``clidep NAME --help`` prints (whose flags come from
  the typed config declarations, clidep/options.py);
- ``<!-- include: benchmarks/results/FILE.md -->`` ... ``<!-- end include -->``: a results table, as
  the benchmark that wrote it printed it;
- ``<!-- commands -->`` ... ``<!-- end commands -->``: every command, its first help line, its page.

    python scripts/docs.py           # rewrite every stale block
    python scripts/docs.py --check   # list the stale blocks, exit 1 if any (tests/test_docs.py runs it)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"(<!-- (options: clidep [a-z]+|include: [^ ]+|commands) -->\n)(.*?)(<!-- end [a-z]+ -->)", re.S)


def _click_commands() -> dict:
    """{name: click.Command} of the clidep application, as --help sees them."""
    import typer

    from clidep.app import app

    return typer.main.get_command(app).commands


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def options_block(name: str) -> str:
    """``clidep NAME``'s usage line and one row per argument and option, each as --help prints it."""
    command = _click_commands()[name]
    ctx = command.context_class(command, info_name=f"clidep {name}")
    rows, panel = [], None
    for param in command.params:
        if param.param_type_name == "argument":
            rows.append(f"| `{param.name.upper()}` | {_cell(param.help or '')} |")
            continue
        record = param.get_help_record(ctx)
        if getattr(param, "rich_help_panel", None) not in (None, panel):  # the headings --help shows
            panel = param.rich_help_panel
            rows.append(f"| **{panel}** | |")
        if record and param.name != "help":
            rows.append(f"| `{record[0]}` | {_cell(record[1])} |")
    table = ["| option | what it does |", "|---|---|", *rows]
    arguments = [
        p.name.upper() + ("..." if p.nargs == -1 else "") for p in command.params if p.param_type_name == "argument"
    ]
    usage = " ".join(["[OPTIONS]", *arguments])
    return f"```\nclidep {name} {usage}\n```\n\n" + "\n".join(table) + "\n"


def commands_block() -> str:
    """The command index: name, the first line of its help, its page."""
    table = ["| command | what it does | page |", "|---|---|---|"]
    for name, command in _click_commands().items():
        page = _page_of(name)
        first = (command.help or "").strip().split("\n\n")[0]
        table.append(f"| `clidep {name}` | {_cell(first)} | [{page.name}]({page.relative_to(DOCS / 'commands')}) |")
    return "\n".join(table) + "\n"


def _page_of(name: str) -> Path:
    for page in sorted((DOCS / "commands").glob("*.md")):
        if f"<!-- options: clidep {name} -->" in page.read_text():
            return page
    raise SystemExit(f"docs/commands has no options block for clidep {name}")


def block_text(kind: str) -> str:
    if kind.startswith("options: clidep "):
        return options_block(kind.removeprefix("options: clidep "))
    if kind.startswith("include: "):
        return (ROOT / kind.removeprefix("include: ")).read_text().rstrip("\n") + "\n"
    return commands_block()


def stale(write: bool) -> list[str]:
    """'page: block' for every generated block that differs from what it would be now (rewritten where WRITE)."""
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = page.read_text()
        new = BLOCK.sub(lambda m: m.group(1) + block_text(m.group(2)) + m.group(4), text)
        if new != text:
            old_blocks = {m.group(2): m.group(3) for m in BLOCK.finditer(text)}
            found += [f"{page.relative_to(ROOT)}: {k}" for k, v in old_blocks.items() if v != block_text(k)]
            if write:
                page.write_text(new)
    return found


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    found = stale(write=not check)
    for line in found:
        print(("stale " if check else "rewrote ") + line)
    return 1 if check and found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

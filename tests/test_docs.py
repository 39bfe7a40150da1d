"""The README and docs/: the set-up commands CI runs are the README's, generated blocks are current,
links resolve, and the README stays one screenful."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from readme_commands import readme_commands  # noqa: E402

import docs  # noqa: E402


def test_the_readme_gives_the_two_commands_a_newcomer_runs():
    setup, tests = readme_commands((ROOT / "README.md").read_text())
    assert setup == "bash scripts/setup.sh && . .venv/bin/activate && clidep demo"
    assert tests == ". .venv/bin/activate && python -m pytest -q"


def test_ci_runs_the_readme_commands_and_nothing_else(tmp_path):
    """.ci/run reads its commands from the README: a README with other commands makes CI run those, in
    order; a set-up block of three commands stops it before any runs."""
    for rel in (".ci/run", "scripts/readme_commands.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    block = "```bash\n# one\necho first >> order\n\n# two\necho second >> order\n```\n"
    (tmp_path / "README.md").write_text(
        f"# x\n\n## Set up\n\ntext\n\n{block}\n## Later\n\n```bash\necho no >> order\n```\n"
    )
    r = subprocess.run(["bash", ".ci/run"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "order").read_text() == "first\nsecond\n"
    assert r.stdout == "+ echo first >> order\n+ echo second >> order\n"
    (tmp_path / "order").unlink()
    (tmp_path / "README.md").write_text("## Set up\n\n```bash\necho a >> order\necho b\necho c\n```\n")
    r = subprocess.run(["bash", ".ci/run"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "exactly two commands, found 3" in r.stderr and not (tmp_path / "order").exists()


def test_every_generated_block_is_current():
    """Options tables from the declarations --help prints, results tables from benchmarks/results/:
    `python scripts/docs.py` rewrites whatever this lists."""
    assert docs.stale(write=False) == []


def test_every_command_has_a_page_with_its_options():
    import typer

    from clidep.app import app

    for name in typer.main.get_command(app).commands:
        page = docs._page_of(name)
        for param in typer.main.get_command(app).commands[name].params:
            if param.param_type_name == "option" and param.name != "help":
                assert f"`{param.opts[0]}" in page.read_text(), (name, param.opts[0])


def test_an_options_table_that_differs_from_the_declarations_is_stale(tmp_path, monkeypatch):
    """A hand edit of a generated row (or a declaration changed without regenerating) is caught, and
    `scripts/docs.py` puts the declared text back."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    page = tmp_path / "docs" / "commands" / "export.md"
    good = page.read_text()
    page.write_text(good.replace("Add a weight-only int4 variant", "Add an int4 variant"))
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    monkeypatch.setattr(docs, "DOCS", tmp_path / "docs")
    assert docs.stale(write=True) == ["docs/commands/export.md: options: clidep export"]
    assert page.read_text() == good and docs.stale(write=False) == []


def test_links_in_readme_and_docs_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []


def test_the_readme_is_one_screenful_and_copies_no_table():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    outside = re.sub(r"<!-- include: .*?<!-- end include -->", "", text, flags=re.S)
    table_rows = [line for line in outside.splitlines() if line.startswith("|") and "---" not in line]
    assert len(table_rows) <= 7, "the README's only hand-written table is the set-up steps"


def test_benchmarks_readme_lists_every_script():
    listed = (ROOT / "benchmarks" / "README.md").read_text()
    missing = [p.name for p in sorted((ROOT / "benchmarks").glob("*.py")) if f"`{p.name}" not in listed]
    assert missing == []

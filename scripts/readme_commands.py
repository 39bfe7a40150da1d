"""Print the README's set-up commands, one a line: the command lines of the first ```bash block
under "## Set up" (comments and blank lines left out). .ci/run runs exactly these, and
tests/test_readme.py checks what they say."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(text: str) -> list[str]:
    match = re.search(r"^## Set up\n.*?^```bash\n(.*?)^```", text, re.M | re.S)
    if match is None:
        raise SystemExit("README.md has no ```bash block under '## Set up'")
    block = match.group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


if __name__ == "__main__":
    sys.stdout.write("".join(f"{c}\n" for c in readme_commands(README.read_text())))

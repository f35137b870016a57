"""Print the command of one README.md section (the first fenced block under ``## <Section>``).

``.ci/run`` runs the README's install and test commands through this, so CI runs exactly what a new
user is told to type; tests/test_readme_commands.py checks each section holds exactly one command.
"""

import sys
from pathlib import Path


def section_command(readme: str, section: str) -> str:
    lines = readme.splitlines()
    try:
        start = lines.index(f"## {section}")
    except ValueError:
        raise SystemExit(f"README.md has no '## {section}' section") from None
    fence = [i for i in range(start + 1, len(lines)) if lines[i].startswith("```")]
    nxt = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    if len(fence) < 2 or fence[0] > nxt:
        raise SystemExit(f"README.md section '## {section}' has no fenced command")
    body = [ln for ln in lines[fence[0] + 1 : fence[1]] if ln.strip()]
    if len(body) != 1:
        raise SystemExit(f"README.md section '## {section}' must hold one command, not {len(body)} lines")
    return body[0].strip()


if __name__ == "__main__":
    print(section_command((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8"), sys.argv[1]))

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_two_one_line_commands():
    install, test = readme_commands()
    assert "\n" not in install and "\n" not in test
    assert "conclave demo" in install and install.endswith("conclave ui") and "pytest" in test


def test_ci_runs_the_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install, test = readme_commands()
    assert install in ci
    assert any(line.startswith(test) for line in ci)

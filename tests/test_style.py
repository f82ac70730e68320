"""The code passes ruff (rules and line length in pyproject.toml's [tool.ruff]): the
library, tests and benchmarks as they are, the chapters as the notebooks jupytext makes
of them (ruff reads notebooks cell by cell)."""

import subprocess
import sys

import jupytext

from subnets.data import REPO_ROOT
from subnets.run import NOTEBOOKS


def test_ruff_passes_on_the_code():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "lib", "tests", "benchmarks",
                           "book/_ext"], cwd=REPO_ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, f"ruff check failed:\n{proc.stdout}{proc.stderr}"


def test_ruff_passes_on_the_chapters(tmp_path):
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md")):
        jupytext.write(jupytext.read(path), tmp_path / f"{path.stem}.ipynb")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--config",
                           str(REPO_ROOT / "pyproject.toml"), str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"ruff check failed on the chapters:\n{proc.stdout}{proc.stderr}"


FOLDED = {"hide-input", "remove-input", "remove-cell"}


def test_chapters_read_like_a_lecture():
    """At least 150 words of prose per 1,000 characters of visible code (folded cells do
    not count), and at least one of the paper's equations as a math block."""
    import re

    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md")):
        cells = jupytext.read(path).cells
        prose = " ".join(c.source for c in cells if c.cell_type == "markdown")
        words = len(re.findall(r"[A-Za-z]+", prose))
        code = sum(len(c.source) for c in cells if c.cell_type == "code"
                   and not FOLDED & set(c.metadata.get("tags", [])))
        assert words / code * 1000 >= 150, f"{path.name}: {words / code * 1000:.0f} words per " \
                                          "1,000 characters of visible code"
        assert "$$" in prose or "```{math}" in prose, f"{path.name}: no equation"

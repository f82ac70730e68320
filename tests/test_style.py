"""The code passes ruff (rules and line length in pyproject.toml's [tool.ruff]): the
library, tests and benchmarks as they are, the chapters as the notebooks jupytext makes
of them (ruff reads notebooks cell by cell)."""

import subprocess
import sys
from pathlib import Path

import jupytext

from subnets.data import REPO_ROOT
from subnets.parameters import NOTEBOOKS


def test_ruff_passes_on_the_code():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "conftest.py", "lib", "tests",
                           "benchmarks", "book/_ext"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False)
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


def test_chapters_stay_lectures_in_size_and_quote_their_numbers():
    """At most 250 lines of code in a chapter (blank lines aside, folded cells included), no
    code cell over 25 lines, at least 5 readings that quote a computed number and one
    reference to a labelled equation."""
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.md")):
        cells = jupytext.read(path).cells
        code = [c.source for c in cells if c.cell_type == "code"]
        prose = " ".join(c.source for c in cells if c.cell_type == "markdown")
        lines = sum(1 for source in code for line in source.splitlines() if line.strip())
        assert lines <= 250, f"{path.name}: {lines} lines of code"
        longest = max(len(source.splitlines()) for source in code)
        assert longest <= 25, f"{path.name}: a code cell of {longest} lines"
        assert prose.count("{glue:text}") >= 5 and "{eq}" in prose, path.name


def test_every_module_lists_its_public_names():
    """``__all__`` names exactly a module's public top-level functions, classes and
    constants (no leading ``_``); internal helpers start with ``_``."""
    import ast
    import importlib
    import pkgutil

    import subnets

    names = [m.name for m in pkgutil.walk_packages(subnets.__path__, "subnets.")]
    for name in ["subnets", *names]:
        module = importlib.import_module(name)
        tree = ast.parse(Path(module.__file__).read_text())
        defined = {node.name for node in tree.body
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        defined |= {t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()}
        public = {n for n in defined if not n.startswith("_")}
        listed = getattr(module, "__all__", None)
        assert listed is not None, f"{name}: no __all__"
        assert not set(listed) - set(dir(module)), \
            f"{name}: __all__ names what it lacks: {sorted(set(listed) - set(dir(module)))}"
        assert public <= set(listed), \
            f"{name}: public but not in __all__ (list them, or start them with _): " \
            f"{sorted(public - set(listed))}"


def test_no_module_of_the_library_is_over_600_lines():
    """A module over 600 lines mixes concerns: split it by what its parts return."""
    from subnets.data import REPO_ROOT

    for path in sorted((REPO_ROOT / "lib" / "subnets").rglob("*.py")):
        lines = len(path.read_text().splitlines())
        assert lines <= 600, f"{path.relative_to(REPO_ROOT)}: {lines} lines"

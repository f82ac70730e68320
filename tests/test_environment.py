"""pyproject.toml and environment.yml must pin the same packages."""

import tomllib

import yaml

from subnets.data import REPO_ROOT


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip if p != "-e .") == sorted(project)


def test_jupyter_book_is_pinned_to_version_1():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [p for p in project if p.startswith("jupyter-book")]
    assert pin.split("==")[1].startswith("1.")

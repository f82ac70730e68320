"""`make publish`: the built site goes to the gh-pages branch with ghp-import."""

import os
import shutil
import subprocess

import pytest

from subnets.data import REPO_ROOT


def test_publish_pushes_the_site_to_gh_pages_of_a_bare_repository(tmp_path):
    """``make publish`` = the book, then ``push-site`` (ghp-import), run here on a tiny
    site against a local bare repository."""
    def git(*args, cwd):
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)

    remote, work = tmp_path / "remote.git", tmp_path / "work"
    git("init", "--bare", str(remote), cwd=tmp_path)
    git("init", str(work), cwd=tmp_path)
    git("remote", "add", "origin", str(remote), cwd=work)
    (work / "site" / "_static").mkdir(parents=True)
    (work / "site" / "index.html").write_text("<h1>book</h1>")
    (work / "site" / "_static" / "a.css").write_text("")
    venv = REPO_ROOT / ".venv"
    if not (venv / "bin" / "ghp-import").exists():
        pytest.skip("no .venv with ghp-import (make install)")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    subprocess.run([shutil.which("make"), "-f", str(REPO_ROOT / "Makefile"), "push-site",
                    f"VENV={venv}", "SITE=site"], cwd=work, check=True, env=env,
                   capture_output=True)
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", "gh-pages"], cwd=remote,
                           check=True, capture_output=True, text=True).stdout.split()
    assert sorted(files) == [".nojekyll", "_static/a.css", "index.html"]

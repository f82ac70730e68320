"""The chapter runner: the command line fails fast on bad input, executes with papermill,
records with provenance and trains seeds in parallel processes."""

import subprocess
import sys
import textwrap

from subnets import parameters, records, run


def test_cli_fails_fast_with_one_line(chapter, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "subnets.run", str(chapter),
                           "-p", "threshold", "-1", "-o", str(tmp_path / "out.ipynb")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: threshold: expected >= 0, got -1.0"
    assert not (tmp_path / "out.ipynb").exists()


def test_cli_executes_with_papermill(chapter, tmp_path):
    import nbformat

    out = tmp_path / "out.ipynb"
    proc = subprocess.run([sys.executable, "-m", "subnets.run", str(chapter), "--preset", "smoke",
                           "-p", "threshold", "0.5", "-p", "sizes", "[3]", "-o", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "unknown parameter" not in proc.stderr  # sizes is set on a line of two names
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    for line in ("epochs = 1", "threshold = 0.5", "sizes = [3]"):
        assert line in injected[0].source


SEEDED_CHAPTER = textwrap.dedent('''\
    ---
    jupytext:
      text_representation: {extension: .md, format_name: myst, format_version: 0.13}
    kernelspec: {display_name: Python 3, language: python, name: python3}
    ---
    # A chapter that trains a network per seed

    ```{code-cell} ipython3
    :tags: [parameters]

    seed = 0
    seeds = 3
    ```

    ```{code-cell} ipython3
    import os

    import torch
    from torch.utils.data import TensorDataset

    from subnets import distributed, train

    x = torch.rand(32, 4, generator=torch.Generator().manual_seed(0))
    problem = TensorDataset(x, (x[:, 0] > 0.5).long())
    for s in range(seed, seed + seeds):
        with train.seeded(s):
            net = torch.nn.Linear(4, 2)
        trained = train.fit(net, problem, train.TrainConfig(epochs=1, batch_size=8, seed=s))
        share = os.environ.get(distributed.SEED_SHARE, 'all').replace('/', 'of')
        with open(f"{share}.log", "a") as f:
            print(s, trained.history.epoch.tolist(), file=f)
    ```
    ''')


def test_seeds_parallel_trains_a_share_of_the_seeds_in_each_process(tmp_path, isolated_cache):
    path = tmp_path / "09_seeded.md"
    path.write_text(SEEDED_CHAPTER)
    out = tmp_path / "out.ipynb"
    proc = subprocess.run([sys.executable, "-m", "subnets.run", str(path), "-p", "seeds", "3",
                           "--seeds-parallel", "2", "-o", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and "failed" not in proc.stderr, proc.stderr
    # Process k trained seeds s with s % 2 == k and took the others as placebos (epoch 0) ...
    assert (tmp_path / "0of2.log").read_text() == "0 [1]\n1 [0]\n2 [1]\n"
    assert (tmp_path / "1of2.log").read_text() == "0 [0]\n1 [1]\n2 [0]\n"
    # ... into the cache, which the chapter's own run then read: three trainings in all.
    assert (tmp_path / "all.log").read_text() == "0 [1]\n1 [1]\n2 [1]\n"
    assert len(list(isolated_cache.glob("fit-*.pt"))) == 3
    assert out.is_file() and sorted(p.name for p in tmp_path.glob(".*.ipynb")) == []
    assert run.main([str(path), "--seeds-parallel", "0"]) == 2


def test_cli_refuses_an_unknown_device_with_exit_status_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "subnets.run", "04", "-p", "device", "tpu9",
                           "-o", str(tmp_path / "out.ipynb")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: device: ")
    assert "tpu9" in proc.stderr and not (tmp_path / "out.ipynb").exists()


# --- recorded runs --------------------------------------------------------------------

def test_record_writes_the_provenance_first(chapter, tmp_path):
    import nbformat

    params = parameters.resolve(chapter, "smoke", {})
    out = run.record(chapter, "smoke", params, tmp_path / "rec.ipynb", progress=False)
    nb = nbformat.read(out, as_version=4)
    assert nb.cells[0].metadata["tags"] == ["provenance"]
    info = nb.metadata["subnets"]["provenance"]
    assert info["parameters"] == {**parameters.read_chapter(chapter)[0], "epochs": 1}
    assert info["commit"] == records._git("rev-parse", "HEAD") and info["wall_seconds"] > 0
    assert "cores" in info["hardware"] or "CUDA" in info["hardware"]
    assert info["cached_results"] == 0  # each test has its own empty cache
    for field in ("hardware", "commit", "wall time", "cache at start", "`epochs=1`"):
        assert field in nb.cells[0].source


def test_cli_record_needs_a_preset(capsys):
    assert run.main(["04", "--record"]) == 2
    assert capsys.readouterr().err.startswith("error: preset: --record records a preset")


def test_kernels_get_unix_sockets_of_their_own():
    a, b = run.IPCKernelManager(), run.IPCKernelManager()
    assert a.transport == b.transport == "ipc" and a.ip != b.ip

"""Cold and warm wall-clock times of each chapter at its defaults (or a preset).

Cold: an empty checkpoint cache (a fresh temporary SUBNETS_CACHE); warm: the same
cache again, so training and cached statistics are reused. Each run is a full papermill
execution through `subnets.run`, kernel start included.

    .venv/bin/python benchmarks/chapter_times.py [CHAPTER ...] [--preset smoke]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def timed_run(chapter: str, preset: str | None, cache: str, out: Path) -> float:
    cmd = ([sys.executable, "-m", "subnets.run", chapter, "-o", str(out)]
           + (["--preset", preset] if preset else []))
    env = {**os.environ, "SUBNETS_CACHE": cache, "SUBNETS_HEADLESS": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="chapter numbers (default: all)")
    parser.add_argument("--preset", help="a preset instead of the defaults")
    args = parser.parse_args()
    chapters = args.chapters or sorted(p.name[:2]
                                       for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.md"))
    rows = []
    for chapter in chapters:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.ipynb"
            cold = timed_run(chapter, args.preset, f"{tmp}/cache", out)
            warm = timed_run(chapter, args.preset, f"{tmp}/cache", out)
        rows.append({"chapter": chapter, "preset": args.preset or "defaults",
                     "cold_s": round(cold, 1), "warm_s": round(warm, 1)})
        print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()

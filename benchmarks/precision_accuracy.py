"""Test accuracy of each chapter's main networks trained at the chapter's defaults (CI
scale) in float32 and in bf16 autocast, and the wall time of each training.

The networks, optimisers and batch sizes are ``precision.py``'s (read from the chapters'
parameters cells); the data are the chapters' own draws of Fashion-MNIST (chapter 5: its
balanced binary task on cluttered canvases, batch-norm statistics re-estimated on the
training images as the chapter does). Seed 0, one network each: the table says whether
bf16 moves a test accuracy by more than a point (the issue's bar), not how the seeds
spread. Each training is its own process with ``--threads`` threads; ``--jobs`` of them
run at once (on a machine with that many spare cores; the times of parallel jobs share
memory bandwidth). The last line is the largest difference in points.

    .venv/bin/python benchmarks/precision_accuracy.py [--jobs 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import torch
from precision import chapter_params, networks

from subnets import canvases, data, evaluation, train


def chapter_data(chapter: str) -> tuple[data.ImageSet, data.ImageSet]:
    """(train, test) as the chapter draws them at its defaults."""
    p = chapter_params(chapter)
    if chapter == "03":  # the first n_test test images, not a balanced draw
        test = data.load(p["dataset"], "test", p["image_size"])
        return (data.load(p["dataset"], "train", p["image_size"], n=p["n_train"]),
                test.subset(torch.arange(min(p["n_test"] or len(test), len(test)))))
    if chapter == "05":
        def binary(images, n, seed):
            names = [f"not {images.classes[p['positive_class']]}",
                     images.classes[p["positive_class"]]]
            images = images.relabel((images.labels == p["positive_class"]).long(), names)
            per_class = n // 2 if n else int(images.labels.bincount().min())
            return images.subset(data.balanced_indices(images.labels, per_class, seed))

        def canvas(split, n, seed):
            images = binary(data.load(p["dataset"], split, image_size=p["image_size"]), n, seed)
            return canvases.cluttered(images, p["canvas_size"], p["n_clutter"],
                                        p["clutter_size"], seed)[0]

        return canvas("train", p["n_train"], p["seed"]), canvas("test", p["n_test"], p["seed"] + 1)
    seed = p.get("seed", 0)
    return (data.load(p["dataset"], "train", p["image_size"], n=p["n_train"], seed=seed),
            data.load(p["dataset"], "test", p["image_size"], n=p["n_test"], seed=seed))


def one(chapter: str, name: str, precision: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    net = next(n for n in networks([chapter]) if n["name"] == name)
    train_set, test_set = chapter_data(chapter)
    epochs = chapter_params(chapter)["epochs"]
    with train.seeded(0):
        model = net["build"]()
    config = train.TrainConfig(epochs=epochs, batch_size=net["batch"], precision=precision,
                               **net["fields"])
    start = time.perf_counter()
    trained = train.fit(model, train_set, config, cached=False, desc=f"{name} {precision}")
    seconds = time.perf_counter() - start
    if chapter == "05":
        train.recalibrate_batch_norm(trained.model, train_set.tensors()[0])
    return {"network": name, "precision": precision, "seconds": round(seconds, 1),
            "accuracy": evaluation.evaluate(trained.model, test_set).accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapters", nargs="*", default=["01", "02", "03", "04", "05"])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=3, metavar=("CHAPTER", "NETWORK", "PRECISION"),
                        help=argparse.SUPPRESS)  # a single training, in its own process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.threads)))
        return
    runs = [(ch, n["name"], p) for ch in args.chapters for n in networks([ch])
            for p in ("fp32", "bf16")]

    def launch(run):
        done = subprocess.run([sys.executable, __file__, "--threads", str(args.threads),
                               "--one", *run], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        return row

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(launch, runs))
    table = pd.DataFrame(rows).pivot(index="network", columns="precision",
                                     values=["accuracy", "seconds"])
    table.columns = [f"{a} {p}" for a, p in table.columns]
    table["difference (points)"] = 100 * (table["accuracy bf16"] - table["accuracy fp32"])
    table["x time"] = table["seconds fp32"] / table["seconds bf16"]
    print(table.round(3).to_string())
    print(f"largest difference {table['difference (points)'].abs().max():.2f} points")


if __name__ == "__main__":
    main()

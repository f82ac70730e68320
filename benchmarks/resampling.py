"""Speed of subnets.resampling's batched scoring against a per-neuron Python loop.

The reference scores one neuron at a time, as the paper's public code does (a Python loop
over the channels of every layer, each metric computed on that channel's slice), from the
same recorded activations; both paths get the same 50 copies of each image. Prints a
table of times and the speed RATIO (loop / batched), and checks that both agree.

    .venv/bin/python benchmarks/resampling.py [--images N] [--repeats R]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from subnets import hooks, resampling, train
from subnets.models import VGG

VGG16_SMALL = (8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 64, 64, 64, "M", 64, 64, 64)


@torch.no_grad()
def per_neuron_loop(model, images, layers, n_samples=50, std=0.1, threshold=0.1, seed=0):
    """The six metrics neuron by neuron (the reference): returns {layer: N x 6 x C}."""
    copies = resampling.perturb(images, n_samples, std, seed=seed)
    relus = [hooks.activation_after(model, name) for name in layers]
    out = {name: torch.empty(len(images), 6, hooks.layer(model, name).out_channels)
           for name in layers}
    for i in range(len(images)):
        batch = torch.cat([images[i:i + 1], copies[i]])
        with hooks.Recorder(model, relus) as rec:
            logits = model(batch)
        target = logits[0].argmax().item()
        o = resampling.output_log_odds(logits[1:], torch.full((n_samples,), target))
        for name, relu in zip(layers, relus):
            acts = rec.outputs[relu].flatten(2)
            w = resampling.outgoing_weights(model, name)
            for c in range(acts.shape[1]):
                z0, z = acts[0, c], acts[1:, c]
                samples = z.view(1, n_samples, 1, -1)
                out[name][i, 0, c] = resampling.correlation_scores(samples, o.view(1, -1))[0, 0]
                out[name][i, 1, c] = resampling.precision_scores(samples, threshold)[0, 0]
                out[name][i, 2, c] = z0.sum()
                out[name][i, 3, c] = z0.var(unbiased=False)
                out[name][i, 4, c] = w[c].sum()
                out[name][i, 5, c] = w[c].var(unbiased=False)
    return out


def timed(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="test images scored")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for cfg, size in ((VGG16_SMALL, 32),
                      ((16, 16, "M", 32, 32, "M", 64, 64, 64, "M", 128, 128, 128), 32)):
        with train.seeded(0):
            model = VGG(cfg, in_channels=1, num_classes=2).eval()
        images = torch.rand(args.images, 1, size, size, generator=torch.Generator().manual_seed(0))
        layers = hooks.conv_layers(model)
        scorer = resampling.InputResampling(model, layers)
        t_batched, batched = timed(lambda scorer=scorer, images=images: scorer.score(images),
                                   args.repeats)
        t_loop, looped = timed(lambda model=model, images=images, layers=layers:
                               per_neuron_loop(model, images, layers), args.repeats)
        # Positions that barely vary lose digits to float32 rounding in either path:
        # 1 % is the check.
        agree = all(torch.allclose(batched[n][:, :6], looped[n], rtol=1e-2, atol=1e-5,
                                   equal_nan=True) for n in layers)
        neurons = sum(hooks.layer(model, n).out_channels for n in layers)
        rows.append({"network": f"VGG {len(layers)} convs, {neurons} neurons",
                     "images": args.images,
                     "batched_s": round(t_batched, 3), "per_neuron_loop_s": round(t_loop, 3),
                     "ratio": round(t_loop / t_batched, 1), "same_scores": agree})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()

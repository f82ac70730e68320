"""Algorithm 1 and the decomposed final layer (``subnets.influence``) against the
straightforward implementations, on random non-negative features of ResNet-20's width.

- histograms: one ``torch.bincount`` over (class, index) pairs against a per-instance
  Python loop filling a ``collections.Counter`` per class (the algorithm as written);
- decomposed layer: ``DecomposedLinear`` (one dense product with the non-kept weights set
  to zero: ``D * C`` multiply-adds) against the literal per-class dot products, a gather of
  each class's ``k2`` features (``k2 * C`` multiply-adds), as the paper's Fig. 5 draws it.

    python benchmarks/influence.py [--n 50000] [--dim 64] [--classes 10] [--k 5] [--repeats 5]

Prints seconds per method and the ratio (reference / subnets); both give identical results
(checked).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import pandas as pd
import torch

from subnets import influence


def loop_histograms(features: torch.Tensor, labels: torch.Tensor, k1: int,
                    num_classes: int) -> torch.Tensor:
    counters = [Counter() for _ in range(num_classes)]
    for f, y in zip(features.tolist(), labels.tolist()):
        top = sorted(range(len(f)), key=lambda j: (-abs(f[j]), j))[:k1]
        counters[y].update(top)
    return torch.tensor([[counters[c][j] for j in range(features.shape[1])]
                         for c in range(num_classes)])


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50000,
                        help="instances (CIFAR-10's training set: 50000)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--k", type=int, default=5, help="k1 = k2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    features = torch.rand(args.n, args.dim)
    labels = torch.randint(0, args.classes, (args.n,))
    fc = torch.nn.Linear(args.dim, args.classes)

    ours = influence.index_histograms(features, labels, args.k, args.classes)
    assert torch.equal(ours, loop_histograms(features, labels, args.k, args.classes))
    layer = influence.DecomposedLinear(fc, influence.most_frequent(ours, args.k))
    weight = fc.weight.detach().gather(1, layer.indices)

    def gathered():
        return (features[:, layer.indices] * weight).sum(-1) + fc.bias

    with torch.no_grad():
        torch.testing.assert_close(layer(features), gathered())

    rows = []
    with torch.no_grad():
        for name, mine, reference in [
            ("histograms (Algorithm 1)",
             lambda: influence.index_histograms(features, labels, args.k, args.classes),
             lambda: loop_histograms(features, labels, args.k, args.classes)),
            ("decomposed layer forward", lambda: layer(features), gathered),
        ]:
            t_mine = best_time(mine, args.repeats)
            t_ref = best_time(reference, max(1, args.repeats // 2))
            rows.append({"step": name, "subnets_s": t_mine, "reference_s": t_ref,
                         "ratio (reference / subnets)": t_ref / t_mine})
    print(f"{args.n} instances, D = {args.dim}, C = {args.classes}, k1 = k2 = {args.k}; "
          f"final-layer MACs per instance: {influence.linear_macs(fc)} full, "
          f"{layer.macs()} decomposed")
    print(pd.DataFrame(rows).to_string(index=False, float_format="{:.4g}".format))


if __name__ == "__main__":
    main()

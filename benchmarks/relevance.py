"""Speed of subnets' per-unit relevance maps (``attribution.UnitConductance``: every unit
of every conv layer in one batched pass) against captum, at equal ``n_steps``.

References, on the same images, target and path:
- captum's ``NeuronConductance``, one call per neuron (one unit at one position: the
  per-neuron loop the paper's "IG map for every unit" implies). The whole loop has
  units x positions calls per layer, so it is timed on a random sample of neurons and
  extrapolated to all of them (marked "extrapolated");
- captum's ``LayerConductance``, one call per layer (timed in full).

Prints times and the speed RATIOS (reference / batched) per network, and the largest
difference between the batched maps and each reference.

    .venv/bin/python benchmarks/relevance.py [--images 4] [--n-steps 16] [--neurons 24]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from captum.attr import LayerConductance, NeuronConductance

from subnets import attribution, data, models
from subnets.dissection import unit_layers
from subnets.hooks import layer


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def benchmark(name: str, model: torch.nn.Module, x: torch.Tensor, target: int, n_steps: int,
              n_neurons: int, seed: int) -> dict:
    model.eval()
    layers = unit_layers(model)

    def forward(z):  # the paper's F: the class probability
        return model(z).softmax(1)

    batched, t_batched = timed(lambda: attribution.UnitConductance(model, layers).attribute(
        x, target, n_steps=n_steps))

    def per_layer():
        return {n: LayerConductance(forward, layer(model, n)).attribute(
                    x, target=target, n_steps=n_steps, method="riemann_trapezoid")
                for n in layers}

    layer_maps, t_layer = timed(per_layer)
    # A random sample of neurons over all layers, in proportion to their neuron counts.
    sizes = {n: batched[n][0].numel() for n in layers}
    total = sum(sizes.values())
    g = torch.Generator().manual_seed(seed)
    picks = torch.randperm(total, generator=g)[:n_neurons].tolist()
    starts, acc = {}, 0
    for n in layers:
        starts[n] = acc
        acc += sizes[n]
    neuron_err = 0.0
    t_neurons = 0.0
    for p in picks:
        n = max((m for m in layers if starts[m] <= p), key=lambda m: starts[m])
        u, i, j = torch.unravel_index(torch.tensor(p - starts[n]), batched[n].shape[1:])
        nc = NeuronConductance(forward, layer(model, n))
        ref, t = timed(lambda nc=nc, u=u, i=i, j=j: nc.attribute(
            x, neuron_selector=(int(u), int(i), int(j)), target=target, n_steps=n_steps,
            method="riemann_trapezoid").sum((1, 2, 3)))
        t_neurons += t
        scale = batched[n][:, u].abs().max().clamp_min(1e-12)
        neuron_err = max(neuron_err, ((batched[n][:, u, i, j] - ref).abs().max() / scale).item())
    t_all_neurons = t_neurons / len(picks) * total
    layer_err = max((batched[n] - layer_maps[n]).abs().max().item() for n in layers)
    return {"network": name, "layers": len(layers), "neurons": total,
            "batched_s": round(t_batched, 2), "per_layer_s": round(t_layer, 2),
            "per_neuron_s (extrapolated)": round(t_all_neurons, 1),
            "ratio per-layer/batched": round(t_layer / t_batched, 1),
            "ratio per-neuron/batched": round(t_all_neurons / t_batched, 0),
            "max |diff| vs per-layer": f"{layer_err:.1e}",
            "max rel. diff vs per-neuron": f"{neuron_err:.2f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--n-steps", type=int, default=16)
    parser.add_argument("--neurons", type=int, default=24,
                        help="neurons timed for the per-neuron loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    test = data.load("fashion-mnist", "test")
    x, y = test.tensors(torch.arange(args.images))
    target = int(y[0])
    rows = []
    for name, build in (("AlexNet-small", models.alexnet_small),
                        ("VGG11-small", models.vgg11_small),
                        ("ResNet18-small", models.resnet18_small)):
        torch.manual_seed(args.seed)
        rows.append(benchmark(name, build(), x, target, args.n_steps, args.neurons, args.seed))
        print(rows[-1], flush=True)
    print(f"\n{args.images} images, n_steps={args.n_steps}, target class {target}; untrained "
          "weights (speed does not depend on them). The per-neuron maps are another "
          "discretisation of the same integral (sum over the inputs of captum's "
          "NeuronConductance): the relative difference (to the unit map's largest value) "
          "shrinks as n_steps grows.")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()

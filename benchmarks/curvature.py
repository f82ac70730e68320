"""Top-k Hessian eigenvalues: Lanczos (``subnets.curvature``, ARPACK via scipy) against
power iteration with deflation, the way PyHessian's ``hessian.eigenvalues(top_n=k)``
does it, on the same Hessian-vector products, for the same k and tolerance.

    python benchmarks/curvature.py [--k 5 10 20] [--tol 1e-3] [--n-images 64]

Prints Hessian-vector products and seconds per method, their ratios (power / Lanczos)
and each method's largest relative error against Lanczos run to machine precision.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from subnets import curvature, data, train
from subnets.models import rf_model


def power_iteration_deflated(hessian: curvature.Hessian, k: int, tol: float, max_iter: int = 100,
                             seed: int = 0) -> np.ndarray:
    """PyHessian's algorithm: per eigenvalue, a random unit vector is orthogonalised
    against the eigenvectors found so far and multiplied by H until the Rayleigh quotient
    changes by less than ``tol`` (relative) or ``max_iter`` products are spent."""
    g = torch.Generator().manual_seed(seed)
    values, vectors = [], []
    for _ in range(k):
        v = torch.randn(hessian.dim, generator=g, dtype=torch.float64)
        v /= v.norm()
        value = None
        for _ in range(max_iter):
            for u in vectors:
                v -= (v @ u) * u
            v /= v.norm()
            hv = hessian.hvp(v).double()
            new = float(hv @ v)
            v = hv / hv.norm()
            if value is not None and abs(value - new) / (abs(value) + 1e-6) < tol:
                break
            value = new
        values.append(new)
        vectors.append(v)
    return np.sort(np.array(values))[::-1]


def timed(fn, hessian: curvature.Hessian) -> tuple[np.ndarray, int, float]:
    hessian.hvps = 0
    start = time.perf_counter()
    values = fn()
    return values, hessian.hvps, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--arch", default="vgg")
    parser.add_argument("--level", type=int, default=2)
    args = parser.parse_args()

    images = data.load("fashion-mnist", "test")
    x, y = images.tensors(torch.arange(args.n_images))
    with train.seeded(0):
        model = rf_model(args.arch, args.level, in_channels=1)
    hessian = curvature.Hessian(model, x, y)
    rows = []
    for k in args.k:
        exact = hessian.top_eigenvalues(k, tol=0, which="magnitude")
        lanczos, l_hvps, l_time = timed(
            lambda k=k: hessian.top_eigenvalues(k, args.tol, which="magnitude"), hessian)
        power, p_hvps, p_time = timed(
            lambda k=k: power_iteration_deflated(hessian, k, args.tol), hessian)
        rows.append({"k": k, "Lanczos HVPs": l_hvps, "power HVPs": p_hvps,
                     "HVP ratio": p_hvps / l_hvps,
                     "Lanczos s": l_time, "power s": p_time, "time ratio": p_time / l_time,
                     "Lanczos max rel. error":
                         float(np.max(np.abs(lanczos - exact) / np.abs(exact))),
                     "power max rel. error": float(np.max(np.abs(power - exact) / np.abs(exact)))})
    print(f"{args.arch} level {args.level}, {hessian.dim} parameters, {args.n_images} images, "
          f"tol {args.tol}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()

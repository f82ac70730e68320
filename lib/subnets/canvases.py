"""Cluttered canvases (Mnih et al. 2014): chapter 5's localisation test, where each object
covers a small, known part of a larger image strewn with pieces of other objects."""

from __future__ import annotations

import torch

from .data import ImageSet, foreground

__all__ = ["cluttered"]


def cluttered(data: ImageSet, canvas_size: int, n_clutter: int = 4, clutter_size: int = 8,
              seed: int = 0) -> tuple[ImageSet, torch.Tensor]:
    """Images on cluttered canvases, as cluttered MNIST (Mnih et al. 2014): chapter 5's
    localisation test, where the object covers a small, known part of each image.

    Args:
        data: the images; each is pasted at a uniformly random place on a black square.
        canvas_size: side of the square (at least the images' side).
        n_clutter: pieces of clutter per canvas, squares cut at random from other images of
            ``data`` and put at random places (overlaps keep the brighter pixel).
        clutter_size: side of a piece of clutter.
        seed: seed of every random choice.

    Returns:
        The canvases (same labels and classes) and the object masks (N x 1 x S x S, bool):
        the pasted image's non-black pixels, or its whole square when the data has no black
        background.

    Example:
        >>> images = ImageSet(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8),
        ...                   torch.tensor([0, 1]), ["a", "b"], "white squares")
        >>> canvases, objects = cluttered(images, 10, n_clutter=1, clutter_size=2)
        >>> tuple(canvases.images.shape), objects.sum((1, 2, 3)).tolist()
        ((2, 1, 10, 10), [16, 16])
    """
    n, c, h, w = data.images.shape
    if canvas_size < max(h, w):
        raise ValueError(f"canvas_size: expected >= the image size {max(h, w)}, got {canvas_size}")
    if not 1 <= clutter_size <= min(h, w):
        raise ValueError(f"clutter_size: expected 1..{min(h, w)}, got {clutter_size}")
    g = torch.Generator().manual_seed(seed)
    canvas = torch.zeros((n, c, canvas_size, canvas_size), dtype=torch.uint8)
    objects = torch.zeros((n, 1, canvas_size, canvas_size), dtype=torch.bool)
    span = canvas_size - clutter_size + 1
    source = torch.randint(0, n, (n, n_clutter), generator=g)
    cut = torch.randint(0, min(h, w) - clutter_size + 1, (n, n_clutter, 2), generator=g)
    place = torch.randint(0, span, (n, n_clutter, 2), generator=g)
    ty = torch.randint(0, canvas_size - h + 1, (n,), generator=g)
    tx = torch.randint(0, canvas_size - w + 1, (n,), generator=g)
    for i in range(n):
        for (s, (cy, cx), (py, px)) in zip(source[i].tolist(), cut[i].tolist(),
                                           place[i].tolist()):
            piece = data.images[s, :, cy:cy + clutter_size, cx:cx + clutter_size]
            region = canvas[i, :, py:py + clutter_size, px:px + clutter_size]
            torch.maximum(region, piece, out=region)
        y, x = ty[i].item(), tx[i].item()
        region = canvas[i, :, y:y + h, x:x + w]
        torch.maximum(region, data.images[i], out=region)
        objects[i, :, y:y + h, x:x + w] = (foreground(data.images[i:i + 1])[0]
                                           if data.black_background else True)
    return ImageSet(canvas, data.labels, data.classes, f"{data.name} on cluttered canvas",
                    black_background=False), objects

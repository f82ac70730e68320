"""The synthetic Broden-like probe set (chapter 2), drawn offline and deterministically:
a plain or textured background and one or two shapes, every pixel labelled with one of the
11 colour names of van de Weijer et al. (``COLORS``, shaded per image), textured regions
with their texture (standing in for materials), shapes as objects, their outlines and
corners as parts (``synthetic_probe``); grey versions for grey networks, with the colour
names grey cannot tell apart merged (``grey_colour_groups``); and the probe of networks
trained on a dataset of objects on black (``probe_with_objects``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from matplotlib.path import Path as Polygon
from torch.nn import functional as F

from .data import ImageSet, balanced_indices
from .probes import LUMINANCE, ProbeSet, concat, dataset_probe, grey

__all__ = ["COLORS", "synthetic_probe", "grey_colour_groups", "probe_with_objects"]

# The 11 basic colour terms of van de Weijer et al. (2009), which Broden annotates every
# pixel with; the RGB values are typical members, jittered per image (shades).
COLORS = {
    "black": (20, 20, 20), "blue": (40, 70, 200), "brown": (120, 70, 30),
    "grey": (128, 128, 128), "green": (40, 150, 50), "orange": (245, 140, 20),
    "pink": (245, 160, 200), "purple": (130, 50, 160), "red": (205, 30, 30),
    "white": (240, 240, 240), "yellow": (240, 220, 40),
}
# Each image shades a colour by up to this many levels per channel (uniform integers).
_SHADE_JITTER = 25
_SHAPES = ("circle", "square", "triangle", "hexagon", "star", "cross")
_STRIPE_ANGLES = (0, 45, 90, 135)
_STRIPE_PERIODS = {"fine": 1 / 8, "coarse": 1 / 4}  # fraction of the image side
_TEXTURES = tuple(f"stripes {a}° {f}" for a in _STRIPE_ANGLES for f in _STRIPE_PERIODS) + (
    "dots", "checkerboard", "grid", "noise")
# The label maps of a synthetic probe image: name -> (category, concept names).
_LABEL_MAPS = {
    "object": ("object", list(_SHAPES)),
    "outline": ("part", [f"{s} outline" for s in _SHAPES]),
    "corner": ("part", [f"{s} corner" for s in _SHAPES]),
    "material": ("material", list(_TEXTURES)),
    "color": ("color", list(COLORS)),
}




def _shape_polygon(shape: str, cx: float, cy: float, r: float,
                  turn: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of ``shape`` (centre, radius, rotation) and the vertices that are corners."""
    def ring(n: int, radii=(1.0,), offset: float = 0.0) -> np.ndarray:
        k = np.arange(n * len(radii))
        rad = np.asarray(radii)[k % len(radii)]
        a = turn + offset + 2 * np.pi * k / (n * len(radii))
        return np.stack([cx + r * rad * np.cos(a), cy + r * rad * np.sin(a)], 1)

    if shape == "circle":
        return ring(40), np.zeros((0, 2))
    if shape == "square":
        v = ring(4, offset=np.pi / 4)
    elif shape == "triangle":
        v = ring(3, offset=-np.pi / 2)
    elif shape == "hexagon":
        v = ring(6)
    elif shape == "star":
        v = ring(5, radii=(1.0, 0.45), offset=-np.pi / 2)
        return v, v[::2]
    elif shape == "cross":
        a = 0.34  # arm half-width, as a fraction of the radius
        base = np.array([(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1),
                         (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)])
        rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
        v = np.array([cx, cy]) + r * base @ rot.T
    else:
        raise ValueError(f"shape: expected one of {_SHAPES}, got {shape!r}")
    return v, v


def _texture_pattern(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size boolean pattern (True: the texture's second colour)."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if name.startswith("stripes"):
        _, angle, fineness = name.split()
        theta = np.deg2rad(int(angle.rstrip("°")))
        period = _STRIPE_PERIODS[fineness] * size
        # Stripes run along `angle` (0°: horizontal), so the pattern varies across it.
        u = -x * np.sin(theta) + y * np.cos(theta) + rng.uniform(0, period)
        return (u % period) < period / 2
    period = size / rng.uniform(5.0, 7.0)
    px, py = (x + rng.uniform(0, period)) % period, (y + rng.uniform(0, period)) % period
    if name == "dots":
        return (px - period / 2) ** 2 + (py - period / 2) ** 2 < (period / 3.5) ** 2
    if name == "checkerboard":
        return (px < period / 2) ^ (py < period / 2)
    if name == "grid":
        width = max(1.0, period / 6)
        return (px < width) | (py < width)
    if name == "noise":
        cell = max(1, size // 32)
        coarse = rng.random((math.ceil(size / cell),) * 2) < 0.5
        return np.kron(coarse, np.ones((cell, cell), dtype=bool))[:size, :size]
    raise ValueError(f"texture: expected one of {_TEXTURES}, got {name!r}")


def _erode(mask: np.ndarray, width: int) -> np.ndarray:
    """Binary erosion by a (2 width + 1) square; outside the image counts as background."""
    t = torch.from_numpy(~mask).float()[None, None]
    return ~(F.max_pool2d(t, 2 * width + 1, stride=1, padding=width)[0, 0] > 0).numpy()


def _draw_probe_image(size: int, rng: np.random.Generator):
    """One probe image (size x size x 3 uint8) and its label maps at full resolution
    (``_LABEL_MAPS``), each holding indices into its own concept list, -1 unlabelled."""
    color_names = list(COLORS)
    palette = rng.permutation(len(color_names))  # distinct colours for the image's regions
    labels = {k: np.full((size, size), -1, dtype=np.int16) for k in _LABEL_MAPS}

    def shade(i: int) -> np.ndarray:
        jitter = rng.integers(-_SHADE_JITTER, _SHADE_JITTER + 1, 3)
        return np.clip(np.array(COLORS[color_names[i]]) + jitter, 0, 255)

    image = np.zeros((size, size, 3), dtype=np.int64)

    def paint(region: np.ndarray, colors: tuple[int, ...], texture: int | None) -> None:
        """Fill ``region`` plainly (one colour) or with a two-colour texture."""
        second = (_texture_pattern(_TEXTURES[texture], size, rng) if texture is not None
                  else np.zeros_like(region))
        for which, c in enumerate(colors[:2 if texture is not None else 1]):
            part = region & (second == bool(which))
            image[part] = shade(c)
            labels["color"][part] = c
        labels["material"][region] = -1 if texture is None else texture

    everywhere = np.ones((size, size), dtype=bool)
    textured = rng.random() < 0.5
    paint(everywhere, (palette[0], palette[1]),
          int(rng.integers(len(_TEXTURES))) if textured else None)
    y, x = np.mgrid[0:size, 0:size] + 0.5
    points = np.stack([x.ravel(), y.ravel()], 1)
    width = max(1, round(size / 40))
    for s in range(int(rng.integers(1, 3))):
        shape = int(rng.integers(len(_SHAPES)))
        r = rng.uniform(0.18, 0.32) * size
        cx, cy = rng.uniform(r, size - r, 2)
        vertices, corners = _shape_polygon(_SHAPES[shape], cx, cy, r, rng.uniform(0, 2 * np.pi))
        region = Polygon(vertices).contains_points(points).reshape(size, size)
        if not region.any():
            continue
        outline = region & ~_erode(region, width)
        fill = palette[2 + 3 * s: 5 + 3 * s]
        paint(region, (fill[0], fill[1]),
              int(rng.integers(len(_TEXTURES))) if rng.random() < 0.6 else None)
        image[outline] = shade(fill[2])
        labels["color"][outline] = fill[2]
        labels["object"][region] = shape
        for k in ("outline", "corner"):
            labels[k][region] = -1
        labels["outline"][outline] = shape
        near = np.zeros((size, size), dtype=bool)
        for vx, vy in corners:
            near |= (x - vx) ** 2 + (y - vy) ** 2 < (0.22 * r) ** 2
        labels["corner"][region & near] = shape
    return image.astype(np.uint8), labels


def _synthetic_concepts() -> tuple[list[str], list[str], dict[str, int]]:
    """Concept names, their categories, and the offset of each label map's indices."""
    names, cats, offsets = [], [], {}
    for key, (cat, group) in _LABEL_MAPS.items():
        offsets[key] = len(names)
        names += group
        cats += [cat] * len(group)
    return names, cats, offsets


def grey_colour_groups() -> list[tuple[str, ...]]:
    """The colour names a grey image can tell apart: names sorted by the luminance of
    their typical RGB value, merged (single linkage) while neighbours differ by less than
    twice the standard deviation that per-image shading adds to luminance (about 10 grey
    levels): blue, brown, purple, red and green become one grey name, so do pink and
    yellow.

    Returns:
        The groups of colour names, each sorted.

    Example:
        >>> len(grey_colour_groups())
        6
    """
    weights = np.asarray(LUMINANCE)
    level = {name: float(np.dot(rgb, weights)) for name, rgb in COLORS.items()}
    per_channel_var = ((2 * _SHADE_JITTER + 1) ** 2 - 1) / 12  # discrete uniform
    gap = 2 * math.sqrt(per_channel_var * float((weights ** 2).sum()))
    ordered = sorted(level, key=level.get)
    groups = [[ordered[0]]]
    for before, name in itertools.pairwise(ordered):
        if level[name] - level[before] < gap:
            groups[-1].append(name)
        else:
            groups.append([name])
    return [tuple(sorted(g)) for g in groups]


def _merge_concepts(probe: ProbeSet, groups: list[tuple[str, ...]], category: str) -> ProbeSet:
    """``probe`` with the concepts of ``category`` named in each group merged into one
    concept called by the group's names joined with "/"."""
    names, cats, remap = [], [], [0]
    for concept, cat in zip(probe.concepts, probe.categories):
        group = next((g for g in groups if concept in g), None) if cat == category else None
        key = ("/".join(group) if group else concept, cat)
        if key not in zip(names, cats):
            names.append(key[0])
            cats.append(key[1])
        remap.append(list(zip(names, cats)).index(key) + 1)
    seg = torch.tensor(remap, dtype=torch.int16)[probe.segmentation.long()]
    return ProbeSet(probe.images, seg, names, cats)


def synthetic_probe(n_images: int = 256, image_size: int = 112, mask_size: int | None = None,
                    channels: int = 3, seed: int = 0, merge_grey: bool = True) -> ProbeSet:
    """A Broden-like probe set drawn offline: a plain or textured background and one or
    two shapes (filled plainly or with a texture, outlined in a third colour), every pixel
    labelled with its colour name, textured regions with their texture (material), shapes
    as objects, their outlines and corners as parts. Colours are shaded per image.

    ``mask_size`` (default: ``image_size``) must divide ``image_size``; labels are taken at
    the centre of each block. ``channels=1`` gives grey images (luminance) with the same
    labels; with ``merge_grey`` the colour names that grey cannot tell apart are merged
    (``grey_colour_groups``). The same arguments give the same probe set.

    Args:
        n_images: how many images.
        image_size: their side.
        mask_size: the label maps' side.
        channels: 3 (colour) or 1 (grey).
        seed: the drawing.
        merge_grey: merge the colour names grey cannot tell apart (``channels=1``).

    Returns:
        The probe set.

    Example:
        >>> probe = synthetic_probe(2, image_size=16, mask_size=8, seed=0)
        >>> probe.images.shape, probe.mask_size, sorted(set(probe.categories))
        (torch.Size([2, 3, 16, 16]), (8, 8), ['color', 'material', 'object', 'part'])
    """
    mask_size = image_size if mask_size is None else mask_size
    if n_images < 1:
        raise ValueError(f"n_images: expected >= 1, got {n_images}")
    if image_size < 8 or mask_size < 1 or image_size % mask_size:
        raise ValueError(f"mask_size: expected a divisor of image_size {image_size} (>= 8), "
                         f"got {mask_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    names, cats, offsets = _synthetic_concepts()
    step = image_size // mask_size
    images, segs = [], []
    for i in range(n_images):
        image, labels = _draw_probe_image(image_size, np.random.default_rng([seed, i]))
        maps = [np.where(m >= 0, m + offsets[k] + 1, 0)[step // 2::step, step // 2::step]
                for k, m in labels.items()]
        images.append(image)
        segs.append(np.stack(maps))
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    probe = ProbeSet(images, torch.from_numpy(np.stack(segs)).to(torch.int16), names, cats)
    if channels == 1:
        probe = ProbeSet(grey(images), probe.segmentation, names, cats)
        if merge_grey:
            probe = _merge_concepts(probe, grey_colour_groups(), "color")
    return probe


def probe_with_objects(data: ImageSet, n_images: int, per_class: int, seed: int = 0) -> ProbeSet:
    """The probe set of networks trained on ``data``: ``n_images`` synthetic images at its
    size and channels (``synthetic_probe``) and, where its objects sit on black, ``per_class``
    of its images per class, each the mask of the object concept named after its class
    (``dataset_probe``), so that every unit has an IoU with every class's object.

    Args:
        data: the images the networks see (their size and channels; the object images).
        n_images: synthetic images.
        per_class: images of each class added as objects.
        seed: the drawing and the choice of images.

    Returns:
        The probe set.

    Example:
        >>> data = ImageSet(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
        ...                 ["a", "b"], "toy", black_background=True)
        >>> probe = probe_with_objects(data, 2, 1)
        >>> len(probe), probe.concepts[-2:]
        (4, ['a', 'b'])
    """
    probe = synthetic_probe(n_images, data.shape[-1], channels=data.shape[0], seed=seed)
    if not data.black_background:
        return probe
    return concat(probe, dataset_probe(data, balanced_indices(data.labels, per_class, seed)))

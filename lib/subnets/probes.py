"""Concept probe sets for Network Dissection (chapter 2): images with pixel-level concept
labels in Broden's four categories (object, part, material, colour).

- ``synthetic_probe`` draws one offline and deterministically: the 11 colour names of van de
  Weijer et al., textures standing in for materials, shapes standing in for objects and
  their outlines and corners for parts;
- ``dataset_probe`` turns images on black (Fashion-MNIST) into object concepts with their
  foreground masks;
- ``load_broden`` reads a real Broden folder;
- ``concat`` joins probe sets, ``concept_images`` gives the images of named concepts with
  their masks (the paper's relevance images).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.path import Path as Polygon
from torch.nn import functional as F

from .data import DataNotFoundError, ImageSet, balanced_indices, data_path, foreground

__all__ = ["CATEGORIES", "COLORS", "LUMINANCE", "ProbeSet", "concat", "dataset_probe",
           "concept_images", "concept_coverage", "synthetic_probe", "probe_with_objects",
           "grey_colour_groups", "grey", "load_broden"]

# Broden's pixel-level categories; its scene and texture labels cover whole images and are
# left out, as in the paper.
CATEGORIES = ("object", "part", "material", "color")
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
LUMINANCE = (0.299, 0.587, 0.114)
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


# --- probe sets --------------------------------------------------------------------------

@dataclass
class ProbeSet:
    """Images with pixel-level concept labels.

    ``segmentation[n, d]`` is a label map at mask resolution: 0 unlabelled, ``k + 1`` for
    concept ``k``. Several maps (``d``) per image let labels overlap (a corner lies on an
    outline; Broden's part masks come in levels). ``concepts[k]`` is a name and
    ``categories[k]`` its category (one of ``CATEGORIES``).

    Args:
        images: uint8, N x C x H x W.
        segmentation: N x D x h x w label maps (int16).
        concepts: the concept names.
        categories: each concept's category.

    Example:
        >>> seg = torch.zeros(2, 1, 2, 2, dtype=torch.int16)
        >>> seg[0, 0, 0, 0] = 1
        >>> probe = ProbeSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), seg, ["tip"], ["part"])
        >>> len(probe), probe.mask_size, probe.mask("tip").sum().item()
        (2, (2, 2), 1)
    """

    images: torch.Tensor
    segmentation: torch.Tensor
    concepts: list[str]
    categories: list[str]
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("images: expected a uint8 tensor N x C x H x W")
        if self.segmentation.ndim != 4 or len(self.segmentation) != len(self.images):
            raise ValueError("segmentation: expected N x D x h x w label maps, one per image")
        if len(self.concepts) != len(self.categories):
            raise ValueError(f"{len(self.concepts)} concepts but {len(self.categories)} categories")
        unknown = set(self.categories) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"categories: {sorted(unknown)} are not among {CATEGORIES}")
        if self.segmentation.numel() and int(self.segmentation.max()) > len(self.concepts):
            raise ValueError("segmentation: a label exceeds the number of concepts")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def mask_size(self) -> tuple[int, int]:
        """The label maps' (h, w)."""
        return tuple(self.segmentation.shape[-2:])

    def tensors(self, indices=None) -> torch.Tensor:
        """Float images in [0, 1].

        Args:
            indices: which images (None: all).

        Returns:
            N x C x H x W floats.
        """
        images = self.images if indices is None else self.images[indices]
        return images.float().div_(255)

    def concept_masks(self, indices) -> torch.Tensor:
        """Every concept's mask on some images.

        Args:
            indices: which images.

        Returns:
            Booleans, B x concepts x h x w.
        """
        seg = self.segmentation[indices].long()
        b, d, h, w = seg.shape
        onehot = torch.zeros(b, len(self.concepts) + 1, h * w, dtype=torch.bool)
        for i in range(d):
            onehot.scatter_(1, seg[:, i].reshape(b, 1, -1), True)
        return onehot[:, 1:].view(b, -1, h, w)

    def mask(self, concept: str) -> torch.Tensor:
        """One concept's mask on every image.

        Args:
            concept: its name.

        Returns:
            Booleans, N x h x w.
        """
        if concept not in self.concepts:
            raise KeyError(f"concept {concept!r} is not in the probe set")
        return (self.segmentation == self.concepts.index(concept) + 1).any(1)

    def presence(self) -> torch.Tensor:
        """Does image n carry any label of category g (``CATEGORIES``)? IoU sums run over
        those images only, as in the paper.

        Returns:
            Booleans, N x categories.
        """
        category_of = torch.tensor([0] + [CATEGORIES.index(c) + 1 for c in self.categories])
        labelled = category_of[self.segmentation.long().flatten(1)]
        return torch.stack([(labelled == g + 1).any(1) for g in range(len(CATEGORIES))], 1)

    def fingerprint(self) -> str:
        """A hash of images, labels and concept names, for content-addressed caches.

        Returns:
            16 hex digits.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.images.numpy().tobytes())
            h.update(self.segmentation.numpy().tobytes())
            h.update(repr((self.concepts, self.categories)).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def concat(*probes: ProbeSet) -> ProbeSet:
    """One probe set from several with the same image and mask sizes; concepts with the
    same name and category are merged, label maps are padded to the deepest one.

    Args:
        *probes: the probe sets.

    Returns:
        Their images and labels, in order.

    Example:
        >>> a = synthetic_probe(2, image_size=8, seed=0)
        >>> len(concat(a, a)), concat(a, a).concepts == a.concepts
        (4, True)
    """
    if len({p.images.shape[1:] for p in probes}) != 1 or len({p.mask_size for p in probes}) != 1:
        raise ValueError("probes: expected the same image shape and mask size, got "
                         f"{[(tuple(p.images.shape[1:]), p.mask_size) for p in probes]}")
    keys: list[tuple[str, str]] = []
    for p in probes:
        keys += [k for k in zip(p.concepts, p.categories) if k not in keys]
    depth = max(p.segmentation.shape[1] for p in probes)
    segs = []
    for p in probes:
        remap = torch.tensor([0] + [keys.index(k) + 1 for k in zip(p.concepts, p.categories)],
                             dtype=torch.int16)
        seg = remap[p.segmentation.long()]
        segs.append(F.pad(seg, (0, 0, 0, 0, 0, depth - seg.shape[1])))
    return ProbeSet(torch.cat([p.images for p in probes]), torch.cat(segs),
                    [k[0] for k in keys], [k[1] for k in keys])


def dataset_probe(data: ImageSet, indices=None) -> ProbeSet:
    """Images of a dataset drawn on black (Fashion-MNIST) as a probe set: each image's
    foreground is the mask of the object concept named after its class.

    Args:
        data: an image set whose objects sit on black.
        indices: which images (None: all).

    Returns:
        The probe set, one object concept per class.

    Example:
        >>> data = ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]),
        ...                 ["coat", "bag"], "toy", black_background=True)
        >>> dataset_probe(data).concepts
        ['coat', 'bag']
    """
    if not data.black_background:
        raise ValueError(f"data: {data.name} has no foreground masks "
                         "(its objects do not sit on black)")
    images = data.images if indices is None else data.images[indices]
    labels = data.labels if indices is None else data.labels[indices]
    seg = torch.where(foreground(images), labels.view(-1, 1, 1, 1) + 1, 0).to(torch.int16)
    return ProbeSet(images.clone(), seg, list(data.classes), ["object"] * len(data.classes))


def concept_images(probe: ProbeSet, names: list[str], category: str = "object",
                   name: str = "probe",
                   classes: list[str] | None = None) -> tuple[ImageSet, torch.Tensor]:
    """The probe images that carry each named concept of ``category``, as an image set
    labelled by the concept's position in ``names`` (an image with two of them appears
    twice), and each image's mask of its concept at image resolution (nearest
    neighbour): Islam and Tushar's relevance images (chapter 2) with their annotation
    masks.

    Example:
        >>> seg = torch.zeros(2, 1, 4, 4, dtype=torch.int16)
        >>> seg[1, 0, :2] = 1
        >>> probe = ProbeSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), seg, ["cat"], ["object"])
        >>> data, masks = concept_images(probe, ["cat"])
        >>> len(data), masks.shape
        (1, torch.Size([1, 1, 4, 4]))

    Args:
        probe: the probe set.
        names: the concepts, one per class.
        category: their category.
        name: the image set's name.
        classes: the image set's class names (default: ``names``).

    Returns:
        The image set and its N x 1 x H x W boolean masks.

    Raises:
        ValueError: a name is not a concept of ``category`` in the probe.
    """
    known = {n for n, c in zip(probe.concepts, probe.categories) if c == category}
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(f"concepts: {missing} are not {category} concepts of the probe set; "
                         f"some that are: {sorted(known)[:12]}")
    index, labels, masks = [], [], []
    for label, concept in enumerate(names):
        k = next(i for i, (n, c) in enumerate(zip(probe.concepts, probe.categories))
                 if n == concept and c == category)
        mask = (probe.segmentation == k + 1).any(1)
        hit = torch.nonzero(mask.flatten(1).any(1)).flatten()
        index.append(hit)
        labels.append(torch.full((len(hit),), label))
        masks.append(mask[hit])
    index, masks = torch.cat(index), torch.cat(masks)[:, None].float()
    masks = F.interpolate(masks, size=tuple(probe.images.shape[-2:]), mode="nearest") > 0
    labelled = ImageSet(probe.images[index], torch.cat(labels), list(classes or names), name)
    return labelled, masks


# --- the synthetic probe set -------------------------------------------------------------

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


def grey(images: torch.Tensor) -> torch.Tensor:
    """RGB images as their luminance.

    Args:
        images: uint8, N x 3 x H x W.

    Returns:
        uint8, N x 1 x H x W.

    Example:
        >>> grey(torch.full((1, 3, 1, 1), 200, dtype=torch.uint8)).item()
        200
    """
    luminance = torch.tensor(LUMINANCE).view(1, 3, 1, 1)
    return (images.float() * luminance).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


# --- a real Broden folder ----------------------------------------------------------------

def load_broden(folder: str | Path, image_size: int | None = None, mask_size: int | None = None,
                split: str | None = None, max_images: int | None = None, fraction: float = 1.0,
                channels: int = 3) -> ProbeSet:
    """Broden's layout (Bau et al.): ``index.csv`` (columns image, split, ih, iw, sh, sw and
    one per category, holding ``;``-separated mask files under ``images/`` or whole-image
    label numbers), ``label.csv`` (number, name, ...). A mask PNG encodes the label number
    as red + 256 x green. The pixel categories object, part, material and color are read;
    scene and texture (whole-image labels) are left out, as in the paper.

    Images are resized bilinearly to ``image_size`` and masks by nearest neighbour to
    ``mask_size`` (defaults: the sizes in ``index.csv``). ``fraction`` reads that share of
    the rows, evenly spaced over the index (1: all of Broden), ``max_images`` at most that
    many; ``channels=1`` gives grey images (luminance) for grey networks.

    Args:
        folder: Broden's folder.
        image_size: the images' side.
        mask_size: the label maps' side.
        split: "train" or "val" (None: both).
        max_images: at most this many.
        fraction: the share of the index read.
        channels: 3 or 1.

    Returns:
        The probe set.

    Raises:
        subnets.data.DataNotFoundError: the folder lacks Broden's files or images.

    Example:
        >>> load_broden("/nowhere")
        Traceback (most recent call last):
        ...
        subnets.data.DataNotFoundError: Broden: /nowhere/index.csv not found ...
    """
    from PIL import Image

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    root = data_path(folder)
    for name in ("index.csv", "label.csv"):
        if not (root / name).is_file():
            raise DataNotFoundError(f"Broden: {root / name} not found (expected Broden's "
                                    "index.csv, label.csv and images/ folder, as unpacked from "
                                    "broden1_224.zip)")
    with open(root / "label.csv", newline="") as f:
        label_names = {int(row["number"]): row["name"] for row in csv.DictReader(f)}
    with open(root / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if split is None or r["split"] == split]
    if fraction < 1:
        kept = sorted({int(k / fraction) for k in range(round(fraction * len(rows)))})
        rows = [rows[i] for i in kept]
    if max_images is not None:
        rows = rows[:max_images]
    if not rows:
        which = f" of split {split!r}" if split else ""
        raise DataNotFoundError(f"Broden: {root / 'index.csv'} lists no images{which}")
    keys: list[tuple[str, str]] = []
    images, segs = [], []
    for row in rows:
        size = image_size or int(row["ih"])
        msize = mask_size or int(row["sh"])
        image = Image.open(root / "images" / row["image"]).convert("RGB").resize(
            (size, size), Image.BILINEAR)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        maps = []
        for cat in CATEGORIES:
            for entry in filter(None, (row.get(cat) or "").split(";")):
                if entry.isdigit():
                    numbers = np.full((msize, msize), int(entry), dtype=np.int64)
                else:
                    png = np.asarray(Image.open(root / "images" / entry).convert("RGB").resize(
                        (msize, msize), Image.NEAREST)).astype(np.int64)
                    numbers = png[..., 0] + 256 * png[..., 1]
                labelled = np.zeros((msize, msize), dtype=np.int16)
                for number in np.unique(numbers[numbers > 0]):
                    key = (label_names.get(int(number), f"label {number}"), cat)
                    if key not in keys:
                        keys.append(key)
                    labelled[numbers == number] = keys.index(key) + 1
                maps.append(torch.from_numpy(labelled))
        segs.append(torch.stack(maps) if maps else torch.zeros(1, msize, msize, dtype=torch.int16))
    depth = max(len(s) for s in segs)
    seg = torch.stack([F.pad(s, (0, 0, 0, 0, 0, depth - len(s))) for s in segs])
    images = torch.stack(images).contiguous()
    return ProbeSet(grey(images) if channels == 1 else images, seg, [k[0] for k in keys],
                    [k[1] for k in keys])


def concept_coverage(probe: ProbeSet, quantile: float = 0.005) -> pd.DataFrame:
    """Each concept's share of the probe's mask pixels and the largest IoU a unit whose
    segmentation holds a ``quantile`` share of the pixels can reach with it:
    ``min(q / coverage, coverage / q)`` (why colour IoUs stay small).

    Args:
        probe: the probe set.
        quantile: the share of positions a unit's segmentation holds.

    Returns:
        One row per concept, with its category, coverage and IoU ceiling.

    Example:
        >>> seg = torch.zeros(1, 1, 10, 10, dtype=torch.int16)
        >>> seg[0, 0, 0, :5] = 1
        >>> probe = ProbeSet(torch.zeros(1, 1, 10, 10, dtype=torch.uint8), seg, ["tip"], ["part"])
        >>> table = concept_coverage(probe, 0.01)
        >>> table[["coverage", "IoU ceiling"]].astype(float).round(3).values.tolist()
        [[0.05, 0.2]]
    """
    coverage = probe.concept_masks(torch.arange(len(probe))).float().mean((0, 2, 3))
    frame = pd.DataFrame({"concept": probe.concepts, "category": probe.categories,
                          "coverage": coverage.numpy()})
    frame["IoU ceiling"] = [min(quantile / c, c / quantile) if c > 0 else 0.0
                            for c in coverage.tolist()]
    return frame


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

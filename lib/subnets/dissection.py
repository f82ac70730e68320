"""Network Dissection (Bau et al. 2017) as Islam and Tushar (chapter 2) use it: every unit of a
layer is a binary segmenter of its top-quantile activations, scored by IoU against concept masks.

- Concepts and their pixel masks come in a ``ProbeSet``: ``synthetic_probe`` draws one
  offline and deterministically (the 11 colour names of van de Weijer et al., textures
  standing in for materials, shapes standing in for objects and their outlines and
  corners for parts); ``dataset_probe`` turns images on black (Fashion-MNIST) into object
  concepts with their foreground masks; ``load_broden`` reads a real Broden folder.
- ``NetDissect(model, layers).attribute(probe)`` runs the two passes of the method: the
  threshold ``T_i`` with ``P(a_i > T_i) = quantile`` over every spatial position of the
  probe set (exact, with a streaming top-k that holds a ``quantile`` share of the
  activations, ``TopQuantile``), then the activation maps upsampled bilinearly to the mask
  size, thresholded, and the IoU of every unit with every concept in batched matrix
  products.
"""

from __future__ import annotations

import contextlib
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
from torch import nn
from torch.nn import functional as F

from . import cache, upsampling
from .data import DataNotFoundError, ImageSet, data_path, foreground
from .devices import to_host, to_model
from .hooks import Recorder, activation_after, conv_layers, layer
from .progress import bar

__all__ = ["CATEGORIES", "COLORS", "LUMINANCE", "ProbeSet", "concat", "dataset_probe",
           "concept_images", "synthetic_probe", "grey_colour_groups", "grey", "load_broden",
           "TopQuantile", "Thresholds", "Dissection", "NetDissect", "unit_layers",
           "unit_sites", "ranking_agreement"]

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
    ``categories[k]`` its category (one of ``CATEGORIES``)."""

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
        return tuple(self.segmentation.shape[-2:])

    def tensors(self, indices=None) -> torch.Tensor:
        """Float images in [0, 1], all or at ``indices``."""
        images = self.images if indices is None else self.images[indices]
        return images.float().div_(255)

    def concept_masks(self, indices) -> torch.Tensor:
        """Boolean masks B x K x h x w of every concept for the images at ``indices``."""
        seg = self.segmentation[indices].long()
        b, d, h, w = seg.shape
        onehot = torch.zeros(b, len(self.concepts) + 1, h * w, dtype=torch.bool)
        for i in range(d):
            onehot.scatter_(1, seg[:, i].reshape(b, 1, -1), True)
        return onehot[:, 1:].view(b, -1, h, w)

    def mask(self, concept: str) -> torch.Tensor:
        """The N x h x w mask of one concept, by name."""
        if concept not in self.concepts:
            raise KeyError(f"concept {concept!r} is not in the probe set")
        return (self.segmentation == self.concepts.index(concept) + 1).any(1)

    def presence(self) -> torch.Tensor:
        """N x G booleans: does image n carry any label of category g (``CATEGORIES``)?
        IoU sums run over those images only, as in the paper."""
        category_of = torch.tensor([0] + [CATEGORIES.index(c) + 1 for c in self.categories])
        labelled = category_of[self.segmentation.long().flatten(1)]
        return torch.stack([(labelled == g + 1).any(1) for g in range(len(CATEGORIES))], 1)

    def fingerprint(self) -> str:
        """A hash of images, labels and concept names, for content-addressed caches."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.images.numpy().tobytes())
            h.update(self.segmentation.numpy().tobytes())
            h.update(repr((self.concepts, self.categories)).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def concat(*probes: ProbeSet) -> ProbeSet:
    """One probe set from several with the same image and mask sizes; concepts with the
    same name and category are merged, label maps are padded to the deepest one."""
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
    foreground is the mask of the object concept named after its class."""
    if not data.black_background:
        raise ValueError(f"data: {data.name} has no foreground masks "
                         "(its objects do not sit on black)")
    images = data.images if indices is None else data.images[indices]
    labels = data.labels if indices is None else data.labels[indices]
    seg = torch.where(foreground(images), labels.view(-1, 1, 1, 1) + 1, 0).to(torch.int16)
    return ProbeSet(images.clone(), seg, list(data.classes), ["object"] * len(data.classes))


def concept_images(probe: ProbeSet, names: list[str], category: str = "object",
                   name: str = "probe") -> tuple[ImageSet, torch.Tensor]:
    """The probe images that carry each named concept of ``category``, as an image set
    labelled by the concept's position in ``names`` (an image with two of them appears
    twice), and each image's mask of its concept at image resolution (nearest
    neighbour): Islam and Tushar's relevance images (chapter 2) with their annotation
    masks."""
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
    return ImageSet(probe.images[index], torch.cat(labels), list(names), name), masks


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
    yellow."""
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
    (``grey_colour_groups``). The same arguments give the same probe set."""
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
    """uint8 RGB images (N x 3 x H x W) as their luminance (N x 1 x H x W)."""
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
    many; ``channels=1`` gives grey images (luminance) for grey networks."""
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


# --- thresholds and IoU ------------------------------------------------------------------

class TopQuantile:
    """The upper ``quantile`` of each row of a stream of values, exactly as
    ``torch.quantile(all_values, 1 - quantile, dim=1)`` (linear interpolation) would give
    it, holding only the largest ``ceil(quantile * (total - 1)) + 1`` values of each row:
    about a ``quantile`` share of the stream instead of all of it. ``total`` is the
    number of values each row will receive."""

    def __init__(self, quantile: float, total: int) -> None:
        if not 0 < quantile < 1:
            raise ValueError(f"quantile: expected a value in (0, 1), got {quantile}")
        if total < 1:
            raise ValueError(f"total: expected >= 1, got {total}")
        position = (1 - quantile) * (total - 1)  # in ascending order, as torch.quantile
        self.low = math.floor(position)
        self.weight = position - self.low
        self.keep = total - self.low  # the values at ranks low and low + 1 are in the top `keep`
        self.total = total
        self.seen = 0
        self.top: torch.Tensor | None = None

    def add(self, values: torch.Tensor) -> None:
        """Take in ``values`` (rows x m)."""
        merged = values if self.top is None else torch.cat([self.top, values], 1)
        self.top = merged.topk(min(self.keep, merged.shape[1]), dim=1).values
        self.seen += values.shape[1]

    def maximum(self) -> torch.Tensor:
        return self.top[:, 0]

    def value(self) -> torch.Tensor:
        if self.seen != self.total:
            raise ValueError(f"TopQuantile expected {self.total} values per row, "
                             f"received {self.seen}")
        low = self.top[:, self.keep - 1]
        high = self.top[:, max(self.keep - 2, 0)]
        return low + self.weight * (high - low)


def _batches(n: int, batch_size: int, desc: str):
    return bar(range(0, n, batch_size), desc=desc, total=math.ceil(n / batch_size))


@dataclass
class Thresholds:
    """Per layer, each unit's top-quantile level ``T_i`` and whether its segmentation
    includes the level itself (``inclusive``): true for a unit whose quantile falls on its
    maximum, as a saturated ReLU6 does when more than the quantile of its positions sit at
    6; there ``S > T`` would be empty, so ``S >= T`` is used. A constant (dead) unit is
    never inclusive: it segments nothing."""

    level: dict[str, torch.Tensor]
    inclusive: dict[str, torch.Tensor]

    def segment(self, name: str, maps: torch.Tensor, units=slice(None)) -> torch.Tensor:
        """``M_i(x)``: the binary masks of upsampled maps ``maps`` (B x U x h x w)."""
        level = self.level[name][units].to(maps.device)
        inclusive = self.inclusive[name][units].to(maps.device)
        # S >= T is S > (the float just below T): one comparison for both kinds of unit.
        level = torch.where(inclusive, torch.nextafter(level, torch.full_like(level, -math.inf)),
                            level)
        return maps > level.view(1, -1, 1, 1)


@dataclass
class Dissection:
    """What ``NetDissect.attribute`` returns: per dissected layer, the units' thresholds
    and their units x concepts IoU."""

    layers: list[str]
    concepts: list[str]
    categories: list[str]
    thresholds: Thresholds
    iou: dict[str, torch.Tensor]

    def units(self) -> pd.DataFrame:
        """One row per unit: its top-1 concept, that concept's category, and the IoU."""
        frames = []
        for name in self.layers:
            best, concept = self.iou[name].max(1)
            frames.append(pd.DataFrame({
                "layer": name, "unit": np.arange(len(best)),
                "concept": [self.concepts[k] for k in concept.tolist()],
                "category": [self.categories[k] for k in concept.tolist()],
                "iou": best.numpy()}))
        return pd.concat(frames, ignore_index=True)

    def detectors(self, iou_threshold: float = 0.04) -> pd.DataFrame:
        """Per layer (rows) and category (columns): units whose top-1 IoU exceeds
        ``iou_threshold`` (Bau et al.'s 0.04 by default), i.e. the paper's Fig. 2."""
        units = self.units()
        units = units[units.iou > iou_threshold]
        table = pd.crosstab(pd.Categorical(units.layer, categories=self.layers),
                            pd.Categorical(units.category, categories=CATEGORIES), dropna=False)
        table.index.name, table.columns.name = "layer", "category"
        return table

    def concept_iou(self, concept: str, category: str | None = None) -> dict[str, torch.Tensor]:
        """Per layer, every unit's IoU with one concept."""
        matches = [k for k, (n, c) in enumerate(zip(self.concepts, self.categories))
                   if n == concept and category in (None, c)]
        if len(matches) != 1:
            raise KeyError(f"concept {concept!r} (category {category}) matches "
                           f"{len(matches)} concepts")
        return {name: self.iou[name][:, matches[0]] for name in self.layers}

    @torch.no_grad()
    def unit_maps(self, model: nn.Module, probe: ProbeSet, name: str, unit: int,
                  indices) -> tuple[torch.Tensor, torch.Tensor]:
        """For probe images at ``indices``: the unit's activation map upsampled to the mask
        size (``S_i(x)``) and its segmentation ``S_i(x) > T_i`` (``M_i(x)``)."""
        if name not in self.layers:
            raise KeyError(f"layer {name!r} was not dissected; layers are {self.layers}")
        model.eval()
        with Recorder(model, [name]) as rec:
            model(to_model(model, probe.tensors(indices)))
        maps = to_host(upsampling.bilinear(rec.outputs[name][:, unit:unit + 1], probe.mask_size))
        return maps[:, 0], self.thresholds.segment(name, maps, slice(unit, unit + 1))[:, 0]


class NetDissect:
    """Network Dissection (Bau et al. 2017) of the named ``layers`` of ``model``, as Islam and
    Tushar use it in chapter 2. ``attribute(probe)`` runs the method's two passes over a
    ``ProbeSet``: every unit's top-``quantile`` threshold (``unit_thresholds``), then its
    IoU with every concept (``unit_iou``), ``batch_size`` probe images per forward pass;
    the result is cached by model, layers, probe and quantile."""

    def __init__(self, model: nn.Module, layers: list[str], quantile: float = 0.005,
                 batch_size: int = 64) -> None:
        if not 0 < quantile < 1:
            raise ValueError(f"quantile: expected a value in (0, 1), got {quantile}")
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        for name in layers:
            layer(model, name)
        self.model = model
        self.layers = list(layers)
        self.quantile = quantile
        self.batch_size = batch_size

    def attribute(self, probe: ProbeSet) -> Dissection:
        """The thresholds and the units x concepts IoU of every layer on ``probe``."""
        layers = self.layers

        def compute() -> dict:
            thresholds = self.unit_thresholds(probe)
            iou = self.unit_iou(probe, thresholds)
            return {"level": [thresholds.level[n] for n in layers],
                    "inclusive": [thresholds.inclusive[n] for n in layers],
                    "iou": [iou[n] for n in layers]}

        entry = cache.cached("dissection", {"model": self.model, "layers": layers,
                                            "probe": probe, "quantile": self.quantile}, compute)
        thresholds = Thresholds(dict(zip(layers, entry["level"])),
                                dict(zip(layers, entry["inclusive"])))
        return Dissection(list(layers), list(probe.concepts), list(probe.categories),
                          thresholds, dict(zip(layers, entry["iou"])))

    @torch.no_grad()
    def unit_thresholds(self, probe: ProbeSet) -> Thresholds:
        """Per layer, the threshold ``T_i`` of every unit with ``P(a_i > T_i) = quantile``
        over all spatial positions of all probe images (one streaming pass)."""
        model, layers, batch_size = self.model, self.layers, self.batch_size
        model.eval()
        tops: dict[str, TopQuantile] = {}
        lowest: dict[str, torch.Tensor] = {}
        with Recorder(model, layers) as rec:
            for start in _batches(len(probe), batch_size, "thresholds"):
                model(to_model(model, probe.tensors(slice(start, start + batch_size))))
                for name in layers:
                    values = rec.outputs[name].transpose(0, 1).flatten(1)
                    if name not in tops:
                        total = len(probe) * rec.outputs[name][0, 0].numel()
                        tops[name] = TopQuantile(self.quantile, total)
                        lowest[name] = values.amin(1)
                    tops[name].add(values)
                    lowest[name] = torch.minimum(lowest[name], values.amin(1))
        level = {name: to_host(tops[name].value()) for name in layers}
        inclusive = {name: to_host((tops[name].value() >= tops[name].maximum())
                                   & (tops[name].maximum() > lowest[name])) for name in layers}
        return Thresholds(level, inclusive)

    @torch.no_grad()
    def unit_iou(self, probe: ProbeSet, thresholds: Thresholds) -> dict[str, torch.Tensor]:
        """Per layer, the units x concepts IoU of the paper's eq. (1): activation maps
        upsampled bilinearly to the mask size, ``> T_i``, against every concept mask; the
        sums run over the images that carry a label of the concept's category."""
        model, layers, batch_size = self.model, self.layers, self.batch_size
        model.eval()
        concept_category = torch.tensor([CATEGORIES.index(c) for c in probe.categories],
                                        dtype=torch.long)
        presence = to_model(model, probe.presence().float())
        label_area = to_model(model, torch.zeros(len(probe.concepts), dtype=torch.float64))
        inter: dict[str, torch.Tensor] = {}
        active: dict[str, torch.Tensor] = {}
        with Recorder(model, layers) as rec:
            for start in _batches(len(probe), batch_size, "IoU"):
                idx = torch.arange(start, min(start + batch_size, len(probe)))
                model(to_model(model, probe.tensors(idx)))
                # B x K x P
                labels = to_model(model, probe.concept_masks(idx).flatten(2).float())
                label_area += labels.sum((0, 2)).double()
                for name in layers:
                    out = rec.outputs[name]
                    units = out.shape[1]
                    inter.setdefault(name, torch.zeros(units, len(probe.concepts),
                                                       dtype=torch.float64, device=out.device))
                    active.setdefault(name, torch.zeros(units, len(CATEGORIES),
                                                        dtype=torch.float64, device=out.device))
                    # Upsampled maps of a wide layer are large: a few images at a time.
                    chunk = max(1, 2 ** 24 // (units * labels.shape[-1]))
                    for i in range(0, len(idx), chunk):
                        maps = upsampling.bilinear(out[i:i + chunk], probe.mask_size)
                        fired = thresholds.segment(name, maps).flatten(2).float()
                        inter[name] += torch.bmm(
                            fired, labels[i:i + chunk].transpose(1, 2)).sum(0).double()
                        active[name] += (
                            fired.sum(2).T @ presence[idx[i:i + chunk].to(out.device)]).double()
        result = {}
        for name in layers:
            union = (to_host(active[name])[:, concept_category] + to_host(label_area)
                     - to_host(inter[name]))
            result[name] = (to_host(inter[name]) / union.clamp_min(1)).float()
        return result


def unit_layers(model: nn.Module) -> list[str]:
    """The activation that follows each main-path conv of ``model``
    (``hooks.activation_after`` of every ``nn.Conv2d``, projection shortcuts aside, that
    has one). These outputs are the units the paper dissects, ranks and ablates."""
    names = []
    for conv in conv_layers(model, shortcuts=False):
        # A conv whose activation is a shared module defined earlier (torchvision's
        # BasicBlock.conv2) has none after it and is left out.
        with contextlib.suppress(ValueError):
            names.append(activation_after(model, conv))
    return names


def unit_sites(model: nn.Module, names: list[str]) -> dict[str, str]:
    """For each unit layer of ``unit_layers``, the module whose output holds the unit's own
    conv branch: the normalisation right after its conv (or the conv itself). Switching a
    unit off there, not at the activation, leaves a residual block's skip path on: zero
    at the ReLU after ``out + shortcut`` would cut the identity too. For a plain
    conv-BN-ReLU unit both places give the same network output."""
    modules = list(model.named_modules())
    position = {name: i for i, (name, _) in enumerate(modules)}
    main_path = set(conv_layers(model, shortcuts=False))
    sites = {}
    for name in names:
        if name not in position:
            raise KeyError(f"layer {name!r} not in {type(model).__name__}")
        convs = [i for i in range(position[name]) if modules[i][0] in main_path]
        if not convs:
            raise ValueError(f"layer {name!r} follows no conv")
        after = modules[convs[-1] + 1] if convs[-1] + 1 < len(modules) else None
        is_norm = after is not None and isinstance(after[1], (nn.BatchNorm2d, nn.GroupNorm))
        sites[name] = after[0] if is_norm else modules[convs[-1]][0]
    return sites


def ranking_agreement(iou: dict[str, torch.Tensor], relevance: dict[str, torch.Tensor],
                      fraction: float = 0.1) -> pd.DataFrame:
    """How far two rankings of the units of each layer agree, per layer and class.

    ``iou[layer]`` and ``relevance[layer]`` are units x classes. ``error`` is the share of
    the top ``fraction`` of units by IoU (at least one) that are not among the top
    ``fraction`` by relevance: 0 when both pick the same units, ``1 - fraction`` on
    average for unrelated rankings. ``spearman`` is the rank correlation over all units."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    from scipy.stats import spearmanr

    rows = []
    for name, scores in iou.items():
        rel = relevance[name]
        if rel.shape != scores.shape:
            raise ValueError(f"{name}: IoU is {tuple(scores.shape)} but relevance is "
                             f"{tuple(rel.shape)}")
        k = max(1, math.ceil(fraction * len(scores)))
        for c in range(scores.shape[1]):
            top_iou = set(torch.argsort(scores[:, c], descending=True, stable=True)[:k].tolist())
            top_rel = set(torch.argsort(rel[:, c], descending=True, stable=True)[:k].tolist())
            constant = scores[:, c].std() == 0 or rel[:, c].std() == 0
            rho = (float("nan") if constant
                   else spearmanr(scores[:, c].numpy(), rel[:, c].numpy()).statistic)
            rows.append({"layer": name, "class": c, "units": len(scores), "top_k": k,
                         "error": 1 - len(top_iou & top_rel) / k, "spearman": rho})
    return pd.DataFrame(rows)

"""Concept probe sets for Network Dissection (chapter 2): images with pixel-level concept
labels in Broden's four categories (object, part, material, colour), a ``ProbeSet``.

- ``dataset_probe`` turns images on black (Fashion-MNIST) into object concepts with their
  foreground masks; ``load_broden`` reads a real Broden folder; ``synthetic_probes`` draws
  one offline;
- ``concat`` joins probe sets, ``concept_images`` gives the images of named concepts with
  their masks (the paper's relevance images), ``concept_coverage`` how much of the images
  each concept covers.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from .data import DataNotFoundError, ImageSet, data_path, foreground

__all__ = ["CATEGORIES", "LUMINANCE", "ProbeSet", "concat", "dataset_probe", "concept_images",
           "concept_coverage", "grey", "load_broden"]

# Broden's pixel-level categories; its scene and texture labels cover whole images and are
# left out, as in the paper.
CATEGORIES = ("object", "part", "material", "color")
LUMINANCE = (0.299, 0.587, 0.114)


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
        >>> seg = torch.ones(1, 1, 2, 2, dtype=torch.int16)
        >>> a = ProbeSet(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), seg, ["tip"], ["part"])
        >>> len(concat(a, a)), concat(a, a).concepts
        (2, ['tip'])
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

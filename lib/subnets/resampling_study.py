"""Chapter 5's sweep over checkpoints and training seeds, and the placebo of its claims.

The claims of Lengerich et al. (2017) are about what training produced, so every one is
measured on each seed's trained network and on the same network untrained (its placebo):
``vgg_layout`` builds the chapter's VGG-16-shaped network, ``checkpoints`` trains one seed
and keeps the weights along training, ``seed_study`` measures on every checkpoint what the
claims need (``SeedStudy``, whose methods are the claims' statistics); the claims
themselves are ``resampling_claims``'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import (
    canvases,
    data,
    evaluation,
    neuron_selection,
    patches,
    resampling,
    train,
)
from .models import VGG
from .progress import bar

__all__ = ["one_vs_rest", "task_images", "analysed_images", "vgg_layout", "checkpoints",
           "SeedStudy", "seed_study", "accuracy_frame", "jaccard_frame", "nanmean", "FIGURE2"]

FIGURE2 = ("correlation", "precision", "random")  # the metrics followed along training


def nanmean(values) -> float:
    """Mean of the defined values (NaN, without a warning, when there are none).

    Args:
        values: numbers, NaN where undefined.

    Returns:
        Their mean over the non-NaN ones, as a float.

    Example:
        >>> nanmean([1.0, float("nan"), 3.0]), nanmean([float("nan")])
        (2.0, nan)
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def one_vs_rest(images: data.ImageSet, positive_class: int, n: int, seed: int
                ) -> data.ImageSet:
    """The paper's person vs non-person task on any data: class ``positive_class`` (label
    1) against all others (label 0), balanced.

    Args:
        images: the labelled images.
        positive_class: the class that becomes label 1.
        n: images kept, half of each label (0: as many as the smaller side has).
        seed: seed of the balanced draw.

    Returns:
        The relabelled, balanced subset (classes "not <name>", "<name>").

    Example:
        >>> images = data.ImageSet(torch.zeros(6, 1, 2, 2, dtype=torch.uint8),
        ...                        torch.tensor([0, 1, 2, 2, 1, 0]), ["a", "b", "c"], "toy")
        >>> binary = one_vs_rest(images, 2, 0, seed=0)
        >>> binary.classes, binary.labels.bincount().tolist()
        (['not c', 'c'], [2, 2])
    """
    names = [f"not {images.classes[positive_class]}", images.classes[positive_class]]
    images = images.relabel((images.labels == positive_class).long(), names)
    per_class = n // 2 if n else int(images.labels.bincount().min())
    return images.subset(data.balanced_indices(images.labels, per_class, seed))


def task_images(dataset: str, split: str, positive_class: int, n: int, seed: int,
                image_size: int | None = None, canvas: tuple[int, int, int] | None = None,
                canvas_seed: int = 0) -> tuple[data.ImageSet, torch.Tensor | None]:
    """Chapter 5's images of one split: ``one_vs_rest`` of ``data.load(dataset, split,
    image_size)``, pasted on cluttered canvases when ``canvas`` = (canvas_size, n_clutter,
    clutter_size) is given (``canvases.cluttered``, with ``canvas_seed``).

    Args:
        dataset, split, image_size: as in ``data.load``.
        positive_class, n, seed: as in ``one_vs_rest``.
        canvas: the cluttered canvas's side, pieces of clutter and their side, or None.
        canvas_seed: seed of the canvases.

    Returns:
        The images and their object masks (N x 1 x H x W): the pasted objects on canvases,
        else the foreground where the objects lie on black, else None.

    Example:
        >>> images, objects = task_images("fashion-mnist", "test", 0, 8, seed=0)
        >>> images.classes, images.labels.bincount().tolist(), objects.shape
        (['not T-shirt/top', 'T-shirt/top'], [4, 4], torch.Size([8, 1, 28, 28]))
        >>> task_images("fashion-mnist", "test", 0, 8, seed=0, canvas=(40, 2, 8))[1].shape
        torch.Size([8, 1, 40, 40])
    """
    images = one_vs_rest(data.load(dataset, split, image_size=image_size), positive_class, n,
                         seed)
    if canvas is not None:
        return canvases.cluttered(images, *canvas, seed=canvas_seed)
    return images, data.foreground(images.tensors()[0]) if images.black_background else None


def analysed_images(train_set: data.ImageSet, test_set: data.ImageSet, n_train: int,
                    n_test: int, seed: int, train_objects: torch.Tensor | None = None,
                    test_objects: torch.Tensor | None = None):
    """The images whose neurons are selected: ``n_train`` training and ``n_test`` test
    images, half of each class, training ones first.

    Args:
        train_set, test_set: the two splits.
        n_train, n_test: images drawn from each (balanced).
        seed: seed of the draw.
        train_objects, test_objects: the splits' object masks, or None.

    Returns:
        images, labels, ``from_train`` (flags the training images) and their object masks
        (None without masks).

    Example:
        >>> toy = data.ImageSet(torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.arange(8) % 2,
        ...                     ["no", "yes"], "toy")
        >>> x, y, from_train, objects = analysed_images(toy, toy, 2, 4, seed=0)
        >>> x.shape, from_train.tolist(), objects
        (torch.Size([6, 1, 2, 2]), [True, True, False, False, False, False], None)
    """
    picked = [data.balanced_indices(d.labels, n // 2, seed)
              for d, n in [(train_set, n_train), (test_set, n_test)]]
    (x_a, y_a), (x_b, y_b) = train_set.tensors(picked[0]), test_set.tensors(picked[1])
    objects = None if test_objects is None else torch.cat([train_objects[picked[0]],
                                                           test_objects[picked[1]]])
    return (torch.cat([x_a, x_b]), torch.cat([y_a, y_b]),
            torch.arange(len(x_a) + len(x_b)) < len(x_a), objects)


def vgg_layout(block_widths: Sequence[int], block_depths: Sequence[int], in_channels: int,
               batch_norm: bool = True, seed: int = 0) -> VGG:
    """The chapter's VGG-16-shaped network: ``block_depths[i]`` 3x3 convs of
    ``block_widths[i]`` channels per block, a max-pool between blocks, then a global
    average pool and one linear layer to two classes.

    Args:
        block_widths: channels of each block (VGG-16: 64, 128, 256, 512, 512).
        block_depths: convs per block (VGG-16: 2, 2, 3, 3, 3).
        in_channels: channels of the images.
        batch_norm: batch norm after every conv.
        seed: seed of the initial weights.

    Returns:
        The untrained network.

    Example:
        >>> net = vgg_layout([4, 8], [1, 2], in_channels=1)
        >>> sum(isinstance(m, nn.Conv2d) for m in net.modules())
        3
    """
    if len(block_widths) != len(block_depths):
        raise ValueError(f"block_depths: expected one depth per block width "
                         f"({len(block_widths)}), got {list(block_depths)}")
    cfg = [x for i, (w, d) in enumerate(zip(block_widths, block_depths))
           for x in [w] * d + ["M"] * (i < len(block_widths) - 1)]
    with train.seeded(seed):
        return VGG(cfg, in_channels=in_channels, num_classes=2, batch_norm=batch_norm)


def checkpoints(new_network: Callable[[], nn.Module], train_set: data.ImageSet,
                config: train.TrainConfig, early_fractions: Sequence[float] = (),
                placebo: bool = False, test_set: data.ImageSet | None = None
                ) -> dict[float, nn.Module]:
    """One seed's networks along training, every one with batch-norm statistics
    re-estimated on the training images (the running averages lag fast-changing weights).

    Args:
        new_network: builds the untrained network (the same weights on every call).
        train_set: the training images.
        config: the training recipe (``epochs``, ``seed``, ...).
        early_fractions: extra checkpoints inside the first epoch, each a short run of the
            same recipe on that share of the training images.
        placebo: train nothing: every checkpoint is the untrained network.
        test_set: test images whose accuracy the long run records after every epoch.

    Returns:
        {epoch: network}: 0 (the untrained network, the placebo), the early fractions and
        1 ... ``config.epochs``.

    Example:
        >>> toy = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                     torch.arange(8) % 2, ["no", "yes"], "toy")
        >>> nets = checkpoints(lambda: vgg_layout([4, 8], [1, 1], 1), toy,
        ...                    train.TrainConfig(epochs=2, batch_size=4), early_fractions=[0.5])
        >>> list(nets)
        [0.0, 0.5, 1.0, 2.0]
    """
    if config.epochs < 1:
        raise ValueError(f"epochs: expected >= 1 (the metrics follow training), "
                         f"got {config.epochs}")
    config = dataclasses.replace(config, snapshots=True)  # the weights after every epoch
    untrained = train.fit(new_network(), train_set, config, placebo=True).model
    epochs = [*map(float, early_fractions), *map(float, range(1, config.epochs + 1))]
    if placebo:
        return dict.fromkeys([0.0, *epochs], untrained)
    x_train = train_set.tensors()[0]
    nets = {}
    for f in early_fractions:
        part = train_set.subset(data.balanced_indices(
            train_set.labels, max(1, round(f * len(train_set) / 2)), config.seed))
        short = dataclasses.replace(config, epochs=1, snapshots=False)
        nets[float(f)] = train.fit(new_network(), part, short, desc=f"{f:g} epoch").model
    trained = train.fit(new_network(), train_set, config, test_data=test_set)
    device = next(untrained.parameters()).device
    nets.update({float(e): trained.at_epoch(e).to(device) for e in range(1, config.epochs + 1)})
    return {0.0: untrained, **{e: train.recalibrate_batch_norm(n, x_train).eval()
                               for e, n in nets.items()}}


@dataclass
class SeedStudy:
    """What chapter 5's claims read from one seed's networks, per checkpoint (epoch): the
    ``selections``, the network's test ``accuracy`` and whether it classifies each analysed
    image right (``full_right``, NaN for training images), the secondary classifiers'
    ``patches`` accuracy per (epoch, metric), the per-image Jaccard of correlation and
    precision and its chance level (``jaccard``), each metric's Jaccard with itself under
    another noise seed (``noise_seed``), the |change of log-odds| when a selection is
    switched off (``switch_off``, image x metric) and each patch against the object masks
    (``patch_table``, with its ``localized`` shares per image and metric). The last four
    are measured at the untrained and the last checkpoint only. ``on_test`` flags the
    analysed test images.

    Args:
        selections: {epoch: ``neuron_selection.Selection``} of the analysed images.
        accuracy: the network's test accuracy, indexed by epoch.
        full_right: {epoch: per analysed image 1.0 right, 0.0 wrong, NaN for training ones}.
        patches: {(epoch, metric): ``patches.PatchAccuracy``}.
        jaccard: {epoch: (per image Jaccard of correlation and precision, its chance)}.
        noise_seed: {epoch: {metric: Jaccard with itself under another noise seed}}.
        switch_off: {epoch: images x metrics |change of log-odds|}.
        patch_table: {epoch: ``patches.patch_table`` with a ``localized`` column}.
        on_test: per analysed image, whether it is a test image.

    Example:
        >>> run = SeedStudy(selections={}, accuracy=pd.Series({0.0: 0.5, 1.0: 0.9}),
        ...                 full_right={1.0: np.array([np.nan, 1.0, 0.0])}, patches={},
        ...                 jaccard={1.0: (np.array([np.nan, 0.5, 0.3]), np.full(3, 0.2))},
        ...                 noise_seed={}, switch_off={}, patch_table={},
        ...                 on_test=np.array([False, True, True]))
        >>> run.full_accuracy(1.0), round(run.overlap(1.0), 3), run.share("precision", 1.0)
        (0.5, 0.2, nan)
    """

    selections: dict[float, neuron_selection.Selection]
    accuracy: pd.Series
    full_right: dict[float, np.ndarray]
    patches: dict[tuple[float, str], patches.PatchAccuracy]
    jaccard: dict[float, tuple[np.ndarray, np.ndarray]]
    noise_seed: dict[float, dict[str, float]]
    switch_off: dict[float, np.ndarray]
    patch_table: dict[float, pd.DataFrame]
    on_test: np.ndarray

    def patch_accuracy(self, metric: str, at: float | Sequence[float]) -> float:
        """The accuracy of ``metric``'s patches, mean over the analysed test images (and
        over the checkpoints ``at``)."""
        return float(np.mean([nanmean(self.patches[e, metric].per_image.numpy()[self.on_test])
                              for e in np.atleast_1d(at)]))

    def full_accuracy(self, at: float) -> float:
        """The network's accuracy on the analysed test images at checkpoint ``at``."""
        return nanmean(self.full_right[at][self.on_test])

    def overlap(self, at: float) -> float:
        """Jaccard(correlation, precision) minus its chance level, mean over images."""
        jaccard, chance = self.jaccard[at]
        return nanmean(jaccard - chance)

    def share(self, metric: str, at: float, column: str = "localized") -> float:
        """The share of ``metric``'s patches that hold object pixels (``"chance"``: that
        boxes of the same sizes at random places would), mean over images; NaN without
        object masks."""
        if at not in self.patch_table:
            return float("nan")
        table = self.patch_table[at]
        per_image = table[table["metric"] == metric].groupby("image")[column].mean()
        return nanmean(per_image.to_numpy())

    def on_object(self, metric: str, at: float) -> float:
        """The share of ``metric``'s patches on the object minus the larger of its two
        controls (random neurons' patches, boxes of the same sizes at random places)."""
        own = self.share(metric, at)
        return min(own - self.share("random", at), own - self.share(metric, at, "chance"))

    def table1(self, at: float) -> pd.DataFrame:
        """The paper's Table 1 at checkpoint ``at``: per metric, the secondary classifier's
        accuracy over all test patches and, with object masks, the share of localised
        patches, its chance level and the mean box area."""
        table = pd.DataFrame({"patch accuracy": {m: self.patches[at, m].accuracy
                                                 for m in resampling.METRICS}})
        if at in self.patch_table:
            columns = ["localized", "chance", "area"]
            table = table.join(self.patch_table[at].groupby("metric")[columns].mean())
        return table

    def switched(self, metric: str, at: float) -> float:
        """|Change of log-odds| when ``metric``'s selection is switched off, mean over
        images and layers."""
        return nanmean(self.switch_off[at][:, resampling.METRICS.index(metric)])


def seed_study(nets: Mapping[float, nn.Module], conv: Sequence[str], images: torch.Tensor,
               labels: torch.Tensor, from_train: torch.Tensor, objects: torch.Tensor | None,
               test_set: data.ImageSet, settings: dict, top_k: int = 5,
               support_fraction: float = 0.1, patch_size: int = 16, patch_width: int = 16,
               patch_epochs: int = 6, precision: str = "fp32", selections_only: bool = False
               ) -> SeedStudy:
    """Measure everything chapter 5's claims need on one seed's checkpoints.

    Args:
        nets: {epoch: network}, as ``checkpoints`` returns them; epoch 0 is the placebo.
        conv: the conv layers analysed.
        images: the analysed images, training ones first; labels: their classes.
        from_train: flags the analysed training images (their patches train the secondary
            classifiers, the others test them).
        objects: object masks of the images (N x 1 x H x W) or None.
        test_set: the test images the networks' accuracy is measured on.
        settings: ``InputResampling``'s settings (``seed`` among them).
        top_k, support_fraction: as in ``neuron_selection.NeuronSelection``.
        patch_size, patch_width, patch_epochs, precision: the secondary classifier's.
        selections_only: measure only what reads the selections (``jaccard``,
            ``switch_off``, ``accuracy``) at the untrained and the last checkpoint, without
            patches: a cheap check of another setting.

    Returns:
        A ``SeedStudy``: all metrics at the untrained and the last checkpoint, correlation,
        precision and random at the others (their deconvnet patches are the costly part).

    Example:
        >>> toy = data.ImageSet(torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8),
        ...                     torch.arange(8) % 2, ["no", "yes"], "toy")
        >>> nets = checkpoints(lambda: vgg_layout([4, 8], [1, 1], 1), toy,
        ...                    train.TrainConfig(epochs=2, batch_size=4))
        >>> x, y, from_train, _ = analysed_images(toy, toy, 2, 2, seed=0)
        >>> conv = resampling.conv_names(nets[2.0], [1, 2])
        >>> run = seed_study(nets, conv, x, y, from_train, None, toy,
        ...                  {"n_samples": 4, "seed": 0}, top_k=1, selections_only=True)
        >>> sorted(run.selections), run.switch_off[2.0].shape  # images x metrics
        ([0.0, 2.0], (4, 7))

        The chapter runs it on every seed's ``checkpoints`` with all metrics' patches
        (``selections_only=False``): minutes per seed.
    """
    ends = (0.0, max(nets))
    if selections_only:
        nets = {e: nets[e] for e in ends}
    same = len({id(n) for n in nets.values()}) == 1  # placebo run: one network, all metrics
    on_test = ~from_train.numpy()
    seed = settings["seed"]
    selections = {e: neuron_selection.NeuronSelection(
        n, conv, top_k=top_k, support_fraction=support_fraction,
        boxes=False if selections_only else True if same or e in ends else list(FIGURE2),
        **settings).select(images)
        for e, n in bar(nets.items(), desc="checkpoints")}
    patch_accuracy = {(e, m): patches.patch_accuracy(
        selections[e].metric(m), selections[e].boxes, images, labels, from_train, patch_size,
        patch_width, patch_epochs, seed, precision)
        for e in bar(nets, desc="patch classifiers") if not selections_only
        for m in (resampling.METRICS if e in ends else FIGURE2)}
    jaccard = {e: (neuron_selection.selection_jaccard(s, s, "correlation", "precision")
                   .nanmean(1).numpy(),
                   torch.stack([resampling.chance_jaccard(s.neurons.eligible[c].sum(-1), top_k)
                                for c in conv], 1).nanmean(1).numpy())
               for e, s in selections.items()}
    noise_seed, switch_off, tables = {}, {}, {}
    for e in ends:
        s = selections[e]
        switch_off[e] = neuron_selection.switch_off_effects(nets[e], s, images).mean(-1).numpy()
        if selections_only:
            continue
        other = neuron_selection.NeuronSelection(nets[e], conv, top_k=top_k, boxes=False,
                                           **{**settings, "seed": seed + 1}).select(images)
        noise_seed[e] = {m: neuron_selection.selection_jaccard(s, other, m, m).nanmean(0).nanmean()
                         .item() for m in ("correlation", "precision")}
        if objects is not None:
            table = patches.patch_table(s, s.boxes, s.metrics, objects)
            table["localized"] = table["object_pixels"] > 0
            tables[e] = table
    return SeedStudy(
        selections,
        pd.Series({e: evaluation.evaluate(n, test_set).accuracy for e, n in nets.items()}),
        {e: np.where(on_test, (evaluation.predict(n, images).argmax(1) == labels).float().numpy(),
                     np.nan) for e, n in nets.items()},
        patch_accuracy, jaccard, noise_seed, switch_off, tables, on_test)


def accuracy_frame(runs: Sequence[SeedStudy]) -> pd.DataFrame:
    """Figure 2's data: one row per seed, checkpoint and selection (the ``FIGURE2`` metrics'
    patches, and the full network on the test images) with its test accuracy.

    Args:
        runs: one ``SeedStudy`` per training seed.

    Returns:
        Columns seed (0, 1, ...), epoch, selection, accuracy.

    Example:
        >>> from subnets.patches import PatchAccuracy
        >>> run = SeedStudy({}, pd.Series({0.0: 0.5, 1.0: 0.9}), {},
        ...                 {(e, m): PatchAccuracy(0.5 + 0.2 * e, torch.full((1,), 0.5 + 0.2 * e))
        ...                  for e in (0.0, 1.0) for m in FIGURE2}, {}, {}, {}, {},
        ...                 np.ones(1, dtype=bool))
        >>> frame = accuracy_frame([run, run])
        >>> len(frame), frame.query("epoch == 1.0 and seed == 1").accuracy.tolist()
        (16, [0.7, 0.7, 0.7, 0.9])
    """
    return pd.DataFrame(
        [{"seed": i, "epoch": e, "selection": m, "accuracy": r.patches[e, m].accuracy}
         for i, r in enumerate(runs) for e in r.accuracy.index for m in FIGURE2]
        + [{"seed": i, "epoch": e, "selection": "full network", "accuracy": a}
           for i, r in enumerate(runs) for e, a in r.accuracy.items()])


def jaccard_frame(runs: Sequence[SeedStudy]) -> pd.DataFrame:
    """Figure 3's data: per checkpoint (rows), the Jaccard index of the correlation and the
    precision selections, its chance level and the network's test accuracy, each a mean
    over images and layers and then over the seeds.

    Args:
        runs: one ``SeedStudy`` per training seed.

    Returns:
        Columns Jaccard, chance, network accuracy; index epoch.

    Example:
        >>> run = SeedStudy({}, pd.Series({0.0: 0.5, 1.0: 0.9}), {}, {},
        ...                 {0.0: (np.array([0.2]), np.array([0.2])),
        ...                  1.0: (np.array([0.6]), np.array([0.2]))}, {}, {}, {},
        ...                 np.ones(1, dtype=bool))
        >>> jaccard_frame([run]).loc[1.0].tolist()
        [0.6, 0.2, 0.9]
    """
    epochs = list(runs[0].accuracy.index)
    return pd.DataFrame({e: {"Jaccard": np.mean([np.nanmean(r.jaccard[e][0]) for r in runs]),
                             "chance": np.mean([np.nanmean(r.jaccard[e][1]) for r in runs]),
                             "network accuracy": np.mean([r.accuracy[e] for r in runs])}
                         for e in epochs}).T.rename_axis("epoch")

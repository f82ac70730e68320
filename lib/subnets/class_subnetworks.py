"""Perna et al.'s class sub-networks S_C (chapter 1) studied over classes, seeds and placebos.

``pruning.ClassSubnetwork`` builds one S_C; this module runs the chapter's study of them on
one network f (``Study``): the channels both pruning rules keep for every class, S_C with
each head, the exemplar and threshold sweeps, and the saliency and Grad-CAM maps of f and
S_C compared image by image. ``statistics`` reduces a study to one number per claim of the
paper, and ``SeedStatistics`` holds those numbers for every training seed's f and for its
placebo (the same network untrained), from which the chapter's claim rows are built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import attribution, cache, claims, data, evaluation, metrics, models, pruning
from . import train as training

__all__ = ["RULES", "VARIANTS", "new_f", "f_config", "attribution_maps", "Study", "statistics",
           "SeedStatistics"]

RULES = ("class mean", "single exemplar")
# (rule, head) of the S_C that the chapter's tables compare
VARIANTS = (("class mean", "trained"), ("class mean", "random"), ("class mean", "original"),
            ("single exemplar", "trained"))


def new_f(shape: tuple[int, ...], num_classes: int, seed: int) -> models.ThreeBlockCNN:
    """The paper's network f (three conv blocks, two linear layers), untrained.

    Args:
        shape: one image's shape (channels x height x width).
        num_classes: the classes f tells apart.
        seed: the seed of its initial weights.

    Returns:
        f, on the CPU.

    Example:
        >>> new_f((1, 28, 28), 10, seed=0).conv3.out_channels
        128
    """
    with training.seeded(seed):
        return models.ThreeBlockCNN(in_channels=shape[0], num_classes=num_classes,
                                    image_size=shape[-1])


def f_config(epochs: int, batch_size: int, lr: float, precision: str,
             seed: int) -> training.TrainConfig:
    """How f is trained: Adam with a cosine schedule (``train.TrainConfig``).

    Args:
        epochs, batch_size, lr, precision: the chapter's parameters of the same names.
        seed: the seed of the network and of its batches.

    Returns:
        The ``TrainConfig``.

    Example:
        >>> f_config(4, 128, 0.002, "fp32", 0).schedule
        'cosine'
    """
    return training.TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, schedule="cosine",
                                precision=precision, seed=seed)


def attribution_maps(model: nn.Module, layer: str | None, x: torch.Tensor,
                     target) -> torch.Tensor:
    """Saliency (``layer`` None) or Grad-CAM of ``layer``, one map per image of ``x``.

    Args:
        model: the network.
        layer: None for saliency, else the layer that Grad-CAM weighs.
        x: images (N x C x H x W).
        target: the class (one, or one per image) whose output the maps explain.

    Returns:
        Maps (N x 1 x H x W).

    Example:
        >>> import torch
        >>> f = new_f((1, 8, 8), 2, seed=0)
        >>> attribution_maps(f, "relu3", torch.rand(3, 1, 8, 8), 0).shape
        torch.Size([3, 1, 8, 8])
    """
    if layer is None:
        return attribution.Saliency(model).attribute(x, target)
    return attribution.GradCAM(model, layer).attribute(x, target)


@dataclass
class Study:
    """Chapter 1's measurements on one network f, computed when first read.

    Args:
        f: the network (trained or a placebo).
        train_set, test_set: the images S_C is built and trained on, and read on.
        seed: f's seed; the seed of its S_C heads and of their training.
        sample_seed: the seed that draws the images the maps are compared on (the same
            images for every f).
        threshold: the class-mean rule's threshold.
        head_config: how a trained head trains (a ``train.TrainConfig`` with loss "bce").
        n_head_train: images a trained head trains on, half class C.
        gradcam_layer: the layer Grad-CAM weighs.
        n_agreement: test images per class and side (C, not C) for the map numbers.
        top: a map's top region, as a share of its pixels.

    Example:
        >>> import torch
        >>> from subnets import data, train
        >>> images = (torch.rand(12, 1, 8, 8) * 255).to(torch.uint8)
        >>> part = data.ImageSet(images, torch.arange(12) % 2, ["a", "b"], "tiny")
        >>> study = Study(new_f((1, 8, 8), 2, 0), part, part, seed=0, sample_seed=0,
        ...               threshold=0.0, head_config=train.TrainConfig(loss="bce"),
        ...               n_head_train=4, gradcam_layer="conv3", n_agreement=2)
        >>> study.kept_counts().shape
        (4, 3)
    """

    f: nn.Module
    train_set: data.ImageSet
    test_set: data.ImageSet
    seed: int
    sample_seed: int
    threshold: float
    head_config: training.TrainConfig
    n_head_train: int
    gradcam_layer: str
    n_agreement: int
    top: float = 0.2

    def __post_init__(self) -> None:
        self.x_train, self.y_train = self.train_set.tensors()
        self.x_test, self.y_test = self.test_set.tensors()
        self.classes = self.train_set.classes
        self.widths = {n: self.f.get_submodule(n).out_channels for n in ("conv1", "conv2",
                                                                        "conv3")}
        self.first_exemplar = {c: int(torch.nonzero(self.y_train == c)[0])
                               for c in range(len(self.classes))}
        self._subnetworks: dict = {}

    def method(self, head: str = "trained", threshold: float | None = None):
        """The ``pruning.ClassSubnetwork`` of f with ``head`` (and another threshold)."""
        return pruning.ClassSubnetwork(
            self.f, list(self.widths), threshold=self.threshold if threshold is None else
            threshold, head=head, train_config=replace(self.head_config, seed=self.seed),
            n_head_train=self.n_head_train, seed=self.seed)

    def subnetwork(self, c: int, head: str = "trained", rule: str = "class mean",
                   threshold: float | None = None, exemplar: int | None = None):
        """S_c (a ``pruning.SubNetwork``) and its binary test predictions (cached). The
        single-exemplar rule takes the first training image of c unless told ``exemplar``."""
        if rule not in RULES:
            raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
        if rule == "single exemplar" and exemplar is None:
            exemplar = self.first_exemplar[c]
        threshold = self.threshold if threshold is None else threshold
        key = (c, head, rule, threshold, exemplar if rule == "single exemplar" else None)
        if key not in self._subnetworks:
            sub = self.method(head, threshold).build(self.x_train, c, self.y_train, key[-1])
            predicted = cache.call(evaluation.predict, sub.model, self.test_set)[:, 0] > 0
            self._subnetworks[key] = sub, predicted
        return self._subnetworks[key]

    @cached_property
    def kept(self) -> dict:
        """(rule, class) -> the channels the rule keeps, per conv."""
        method = self.method()
        return {(rule, c): method.kept_channels(
            self.x_train, c, self.y_train,
            self.first_exemplar[c] if rule == "single exemplar" else None)
            for c in range(len(self.classes)) for rule in RULES}

    def kept_counts(self) -> pd.DataFrame:
        """Kept channels per conv (columns), per rule and class (rows)."""
        table = pd.DataFrame({key: {n: len(idx) for n, idx in k.items()}
                              for key, k in self.kept.items()}).T
        table.index = pd.MultiIndex.from_tuples(table.index, names=["rule", "class"])
        return table

    def rules_jaccard(self) -> pd.DataFrame:
        """Per class (rows) and conv, the Jaccard of the channel sets the two rules keep."""
        def one(c, n):
            kept_by = [metrics.index_mask(self.kept[rule, c][n], self.widths[n]) for rule in RULES]
            return metrics.jaccard(*kept_by).item()
        return pd.DataFrame({c: {n: one(c, n) for n in self.widths}
                             for c in range(len(self.classes))}).T

    def scores(self, variants=VARIANTS) -> pd.DataFrame:
        """``metrics.binary_scores`` of every S_C (rows: rule, head, class) on the test set."""
        table = pd.DataFrame({(rule, head, c): metrics.binary_scores(
            self.subnetwork(c, head, rule)[1], self.y_test == c)
            for rule, head in variants for c in range(len(self.classes))}).T
        table.index.names = ["rule", "head", "class"]
        return table

    def table1(self, c: int, per_class: pd.Series) -> pd.DataFrame:
        """The paper's Table 1 for class c: f's per-class accuracy (``per_class``) beside
        each S_c's recall (on c) and specificities (other classes), and their averages."""
        columns = {"f: accuracy": per_class}
        for rule, head in VARIANTS:
            predicted = self.subnetwork(c, head, rule)[1]
            columns[f"S_{c} ({rule}, {head})"] = metrics.accuracy_by_class(
                predicted == (self.y_test == c), self.y_test, self.classes)
        table = pd.DataFrame(columns)
        summary = {"mean specificity, other classes": table.drop(self.classes[c]).mean(),
                   "global average (paper's)": table.mean()}
        table.index = [f"{n} (recall)" if i == c else n for i, n in enumerate(self.classes)]
        return pd.concat([table, pd.DataFrame(summary).T])

    def exemplars(self, c: int, n: int) -> dict[str, int]:
        """n training-set indices of class c: the first, f's most confident, random others."""
        idx = torch.nonzero(self.y_train == c).flatten()
        confidence = evaluation.predict(self.f, self.x_train[idx]).softmax(1)[:, c]
        g = torch.Generator().manual_seed(self.sample_seed + c)
        chosen = {"first": int(idx[0]), "most confident": int(idx[int(confidence.argmax())])}
        for i in idx[torch.randperm(len(idx), generator=g)].tolist():
            if len(chosen) >= n:
                break
            if i not in chosen.values():
                chosen[f"random {len(chosen) - 1}"] = i
        return dict(list(chosen.items())[:n])

    def exemplar_rows(self, classes: list[int], n: int) -> pd.DataFrame:
        """Per class of ``classes`` and each of its ``n`` exemplars: the kept channels per
        conv and the binary scores of S_C (single-exemplar rule, trained head)."""
        rows = []
        for c in classes:
            for name, e in self.exemplars(c, n).items():
                sub, predicted = self.subnetwork(c, rule="single exemplar", exemplar=e)
                rows.append({"class": self.classes[c], "exemplar": name, "training image": e,
                             **{n: len(idx) for n, idx in sub.kept.items()},
                             **metrics.binary_scores(predicted, self.y_test == c)})
        return pd.DataFrame(rows).set_index(["class", "exemplar"])

    def threshold_sweep(self, classes: list[int], thresholds: list[float]) -> pd.DataFrame:
        """Per class and class-mean threshold: kept channels and S_C's binary scores."""
        rows = []
        for c in classes:
            for t in thresholds:
                sub, predicted = self.subnetwork(c, threshold=t)
                kept = {n: len(idx) for n, idx in sub.kept.items()}
                rows.append({"class": self.classes[c], "threshold": t, **kept,
                             "kept fraction": sum(kept.values()) / sum(self.widths.values()),
                             **metrics.binary_scores(predicted, self.y_test == c)})
        return pd.DataFrame(rows)

    def flat_shares(self, c: int, layer: str, x: torch.Tensor) -> dict[str, float]:
        """The share of flat Grad-CAM maps of ``layer`` on images x: f's (for its predicted
        class) and S_c's with the trained and the random head."""
        shown = {"f": (self.f, evaluation.predict(self.f, x).argmax(1)),
                 f"S_{c} trained": (self.subnetwork(c)[0].model, 0),
                 f"S_{c} random head": (self.subnetwork(c, "random")[0].model, 0)}
        return {name: metrics.is_flat(attribution_maps(model, layer, x, target)).double()
                .mean().item() for name, (model, target) in shown.items()}

    def _head_agreement(self, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
        """Spearman of paired maps, 0 where only a is flat (it shows nothing), NaN if b is."""
        agree = metrics.map_agreement(a, b, self.top)
        rho = agree["spearman"].to_numpy().copy()
        rho[agree["flat_a"].to_numpy() & ~agree["flat_b"].to_numpy()] = 0.0
        return rho

    def map_rows(self, c: int, gradcam_layer: str | None = None) -> pd.DataFrame:
        """Per test image (``n_agreement`` of c, as many of other classes) and method: the
        agreement of f's and S_c's maps, their on-object shares and sizes, with controls."""
        layer = gradcam_layer or self.gradcam_layer
        iou = f"top{round(self.top * 100)}_iou"
        trained, random_head = self.subnetwork(c)[0].model, self.subnetwork(c, "random")[0].model
        g = torch.Generator().manual_seed(self.sample_seed + c)
        frames = []
        for side, pool in (("C", self.y_test == c), ("not C", self.y_test != c)):
            pool = torch.nonzero(pool).flatten()
            idx = pool[torch.randperm(len(pool), generator=g)[:self.n_agreement]]
            x = self.x_test[idx]
            predicted = evaluation.predict(self.f, x).argmax(1)
            other = torch.roll(torch.arange(len(x)), 1)  # image i paired with image i - 1
            objects = data.foreground(x) if self.test_set.black_background else None
            for method, lay in (("saliency", None), ("Grad-CAM", layer)):
                a = attribution_maps(self.f, lay, x, predicted)
                b = attribution_maps(trained, lay, x, 0)
                agree = metrics.map_agreement(a, b, self.top)
                frame = pd.DataFrame({
                    "class": self.classes[c], "images": side, "method": method,
                    "image": idx.numpy(), "spearman": agree["spearman"], "iou": agree[iou],
                    "shuffled iou": metrics.map_agreement(a, b[other], self.top)[iou],
                    "f flat": agree["flat_a"], "S_C flat": agree["flat_b"],
                    "f area": metrics.half_max_area(a).numpy(),
                    "S_C area": metrics.half_max_area(b).numpy()})
                self._object_columns(frame, x, a, b, objects)
                if lay is not None:
                    r = attribution_maps(random_head, lay, x, 0)
                    frame["random head flat"] = metrics.is_flat(r).numpy()
                    frame["heads agree"] = self._head_agreement(r, b)
                    frame["other image agree"] = self._head_agreement(b[other], b)
                frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def _object_columns(self, frame, x, a, b, objects) -> None:
        """Add to ``frame`` the on-object shares of f's (a) and S_C's (b) top regions and of
        a centred blob's, their half-max regions' cover of object and background, and the
        object's share of the image (NaN without an object mask)."""
        on = {"f on object": a, "S_C on object": b,
              "blob on object": metrics.centred_blob(len(x), *x.shape[-2:])}
        for name, m in on.items():
            frame[name] = np.nan if objects is None else metrics.object_share(
                metrics.top_fraction_mask(m, self.top), objects).numpy()
        for name, m in (("f", a), ("S_C", b)):
            for part, inside in (("object", True), ("background", False)):
                frame[f"{name} {part} cover"] = np.nan if objects is None else \
                    metrics.half_max_cover(m, objects == inside).numpy()
        frame["chance"] = np.nan if objects is None else metrics.foreground_share(
            objects).numpy()

    @cached_property
    def maps(self) -> pd.DataFrame:
        """``map_rows`` of every class."""
        return pd.concat([self.map_rows(c) for c in range(len(self.classes))],
                         ignore_index=True)


def _grows_on_object(rows: pd.DataFrame) -> float:
    """S_C's half-max region's gain over f's on the object minus off it."""
    return ((rows["S_C object cover"] - rows["f object cover"])
            - (rows["S_C background cover"] - rows["f background cover"])).mean()


def statistics(study: Study, target_class: int, figure4_class: int,
               exemplar_classes: list[int], n_exemplars: int) -> dict:
    """Per claim of the chapter, its statistic on one network f.

    Args:
        study: the ``Study`` of f.
        target_class: the class of the paper's Table 1.
        figure4_class: the class of the paper's Figs 3-4.
        exemplar_classes, n_exemplars: the exemplar study's classes and exemplars per class.

    Returns:
        Statistic name -> value (see the chapter's claims for what each measures).

    Example:
        >>> import torch
        >>> from subnets import data, train
        >>> images = (torch.rand(12, 1, 8, 8) * 255).to(torch.uint8)
        >>> part = data.ImageSet(images, torch.arange(12) % 2, ["a", "b"], "tiny")
        >>> study = Study(new_f((1, 8, 8), 2, 0), part, part, seed=0, sample_seed=0,
        ...               threshold=0.0, head_config=train.TrainConfig(epochs=1, loss="bce"),
        ...               n_head_train=4, gradcam_layer="conv3", n_agreement=2)
        >>> values = statistics(study, target_class=1, figure4_class=0, exemplar_classes=[1],
        ...                     n_exemplars=2)
        >>> float(values["prior"]), values["exactness"] < 1e-5
        (0.5, True)
    """
    C, K = target_class, len(study.classes)
    y = study.y_test.numpy()
    scores = study.scores(VARIANTS[:3])
    removed = 1 - study.kept_counts().xs("class mean", level="rule") / pd.Series(study.widths)
    m = study.maps
    grad, sal = m[m["method"] == "Grad-CAM"], m[m["method"] == "saliency"]
    on_c = grad[grad["images"] == "C"]
    fig4 = grad[grad["class"] == study.classes[figure4_class]]
    fig4_out, fig4_in = fig4[fig4["images"] == "not C"], fig4[fig4["images"] == "C"]
    f_evaluation = evaluation.evaluate(study.f, study.test_set)
    f_correct = (f_evaluation.predictions == f_evaluation.labels).numpy()
    pc = study.subnetwork(C)[1].numpy()
    s_correct = pc == (y == C)
    f1 = study.exemplar_rows(exemplar_classes, n_exemplars)["f1"]
    # |F1 gap| of the two rules (first exemplar) minus the F1 range over exemplars
    rules = [abs(scores.loc[("class mean", "trained", c), "f1"]
                 - f1[study.classes[c], "first"]) - np.ptp(f1[study.classes[c]])
             for c in exemplar_classes]
    loss = sal["f on object"] - sal["S_C on object"]
    e = {
        "f accuracy": f_correct.mean(),
        "exactness": pruning.ablation_difference(
            study.f, study.method("original").build(study.x_train, C, study.y_train),
            study.x_test[:500], "conv3"),
        "prior": np.mean([study.subnetwork(k)[0].prior for k in range(K)]),
        "conv1 all": 1 - removed["conv1"].mean(),
        "conv3 most": (removed["conv3"] > removed[["conv1", "conv2"]].max(axis=1)).mean(),
        "conv3 removed": removed["conv3"].mean(),
        "recall minus best specificity": pc[y == C].mean() - max(
            1 - pc[y == k].mean() for k in range(K) if k != C),
        "global gap": np.mean([f_correct[y == k].mean() - s_correct[y == k].mean()
                               for k in range(K)]),
        "rules minus exemplars": np.mean(rules),
        "heads agree": grad["heads agree"].mean(),
        "other image agree": grad["other image agree"].mean(),
        "random flat": grad["random head flat"].mean(),
        "S_C flat": on_c["S_C flat"].mean(),
        "flat pairs": (on_c["f flat"] | on_c["S_C flat"]).mean(),
        "S_9 flat pairs": (fig4_out["f flat"] | fig4_out["S_C flat"]).mean(),
        "on object": (on_c["S_C on object"]
                      - np.maximum(on_c["chance"], on_c["blob on object"])).mean(),
        "chance": on_c["chance"].mean(), "blob": on_c["blob on object"].mean(),
        "saliency noisier": loss[sal["images"] == "not C"].mean()
        - loss[sal["images"] == "C"].mean(),
        "complementary": (on_c["iou"] - on_c["shuffled iou"]).mean(),
        "iou": on_c["iou"].mean(), "shuffled iou": on_c["shuffled iou"].mean(),
        "S_9 grows on object": _grows_on_object(fig4_out),
        "S_9 grows on object, on 9": _grows_on_object(fig4_in),
        "S_9 area gain": (fig4_out["S_C area"] - fig4_out["f area"]).mean(),
    }
    for head in pruning.HEADS:
        e[f"detects, {head}"] = np.mean([scores.loc[("class mean", head, k), "balanced_accuracy"]
                                         for k in range(K)])
    return e


@dataclass
class SeedStatistics:
    """``statistics`` of every training seed's f and of its placebo, the same network
    untrained: one row per seed, one column per statistic.

    Args:
        trained: the trained networks' statistics (rows: seeds).
        placebo: their placebos' statistics, seed for seed.

    Example:
        >>> values = SeedStatistics(pd.DataFrame({"a": [0.9, 0.85, 0.8]}),
        ...                         pd.DataFrame({"a": [0.5, 0.45, 0.4]}))
        >>> round(values.mean("a"), 2), values.claim("a high", "0.9", "a",
        ...                                          claims.Rule(">", 0.5)).decide().outcome
        (0.85, 'held')
    """

    trained: pd.DataFrame
    placebo: pd.DataFrame

    @classmethod
    def of(cls, trained: dict[int, Study], placebo: dict[int, Study],
           **settings) -> SeedStatistics:
        """The ``statistics`` (with ``settings``) of the studies of the trained networks
        and of their placebos, each a dict seed -> ``Study``; pass the same dict twice
        where the placebos are the networks (a placebo run), and it is studied once."""
        def table(studies):
            return pd.DataFrame([statistics(st, **settings) for st in studies.values()],
                                index=list(studies))
        values = table(trained)
        return cls(values, values if placebo is trained else table(placebo))

    def mean(self, key: str, kind: str = "trained") -> float:
        """The mean over seeds of statistic ``key`` on the ``kind`` networks."""
        return float(getattr(self, kind)[key].mean())

    def interval(self, key: str, kind: str = "trained") -> claims.Estimate:
        """The seed interval of statistic ``key`` on the ``kind`` networks."""
        return claims.seed_interval(getattr(self, kind)[key])

    def claim(self, claim: str, paper: str, key: str, rule: claims.Rule,
              **fields) -> claims.Claim:
        """A trained row (``claims.Claim.trained``) of statistic ``key``."""
        return claims.Claim.trained(claim, paper, self.trained[key], self.placebo[key], rule,
                                    **fields)

    def glue(self, prefix: str, keys: list[str], placebo: bool = False) -> None:
        """Glue (myst-nb) the mean over seeds of each statistic in ``keys`` for a reading:
        as ``<prefix>_<key>``, spaces and commas made underscores, and with ``placebo`` the
        placebos' mean as ``<prefix>_<key>_placebo``."""
        from myst_nb import glue

        for key in keys:
            name = f"{prefix}_" + re.sub(r"[ ,]+", "_", key)
            glue(name, self.mean(key), display=False)
            if placebo:
                glue(f"{name}_placebo", self.mean(key, "placebo"), display=False)

import pandas as pd
import pytest
import torch

from subnets import profiling
from subnets.ablation import AblationResult
from subnets.dissection import Dissection


def test_over_networks_computes_once_per_state_or_once_in_a_placebo_run():
    calls = []

    def compute(state, n, s):
        calls.append((state, n, s))
        return len(calls)

    both = profiling.over_networks(compute, [("a", 0), ("a", 1)])
    assert both["trained"] == {("a", 0): 1, ("a", 1): 2}
    assert both["placebo"] == {("a", 0): 3, ("a", 1): 4}
    calls.clear()
    once = profiling.over_networks(compute, [("a", 0)], placebo_run=True)
    assert once["placebo"] is once["trained"] and len(calls) == 1


def dissected(object_iou):
    """One layer of two units: unit 0's IoU with the object, unit 1 a colour detector."""
    return Dissection({"l": torch.tensor([[object_iou, 0.0], [0.0, 0.5]])}, ["cat", "red"],
                      ["object", "color"])


def test_detector_claims_judge_trained_against_placebo_seed_for_seed():
    seeds = [0, 1]
    results = {"trained": {("alexnet", s): dissected(0.5) for s in seeds},
               "placebo": {("alexnet", s): dissected(0.0) for s in seeds}}
    balance, shadow = profiling.detector_claims(results, seeds, 0.04)
    # trained: one object and one colour detector (0 per unit); placebo: one colour (-0.5)
    assert balance.estimate.value == 0.0 and balance.placebo.value == -0.5
    assert balance.claim.startswith("alexnet: more object") and "1 object+part" in balance.control
    assert shadow.estimate.value == 0.0  # the object detector has no colour close behind


def test_agreement_claims_use_the_papers_table_and_chance():
    cells = pd.DataFrame({"layer": ["l", "l"], "error": [0.0, 0.2], "chance": [0.9, 0.9],
                          "spearman": [1.0, 0.5]})
    results = {state: {("vgg11", s): cells for s in (0, 1)} for state in profiling.STATES}
    error, chance = profiling.agreement_claims(results, [0, 1])
    assert error.estimate.value == pytest.approx(0.1)
    assert error.rule.threshold == pytest.approx(sum(profiling.PAPER_TABLE1["vgg11"]))
    assert chance.estimate.value == pytest.approx(0.8) and chance.control == "chance error 90%"
    table = profiling.agreement_table(results, 0)
    assert table.loc["vgg11", "mean error"] == pytest.approx(0.1)


def ablated(top_breaks: bool):
    """Two classes, two images; the top ablation breaks its own class's image or nothing."""
    rows, correct = [], []
    for c, name in enumerate(["a", "b"]):
        for end in ("none", "top", "bottom", "random"):
            hit = end == "top" and top_breaks
            rows.append({"class": name, "end": end, "fraction": 0.0 if end == "none" else 0.5,
                         "draw": 0, "units": 1, "share": 0.5, "accuracy_class": 0.0 if hit
                         else 1.0, "accuracy_others": 1.0})
            correct.append(torch.tensor([not (hit and c == 0), not (hit and c == 1)]))
    return AblationResult(pd.DataFrame(rows), torch.stack(correct), torch.tensor([0, 1]))


def test_ablation_claims_compare_the_top_units_with_random_ones():
    seeds = [0, 1]
    results = {"trained": {(n, s): ablated(True) for n in ("alexnet", "resnet18") for s in seeds},
               "placebo": {(n, s): ablated(False) for n in ("alexnet", "resnet18")
                           for s in seeds}}
    rows = profiling.ablation_claims(results, seeds, 0.5)
    assert rows[0].estimate.value == 0.5 and rows[0].rule is None  # the share switched off
    top = rows[1]
    assert top.claim.startswith("alexnet: switching off the top 50%")
    assert top.estimate.value == 1.0 and top.placebo.value == 0.0
    assert rows[-1].claim.startswith("ResNet18 suffers most") and len(rows) == 1 + 3 * 2 + 1
    ablations, intact = profiling.ablation_frames(results, 0)
    assert set(ablations.network) == {"alexnet", "resnet18"}
    assert intact.loc[("alexnet", "a"), "accuracy_class"] == 1.0


def test_photo_set_draws_whole_classes_with_its_seed():
    labels = torch.tensor([5, 9, 5, 2, 9, 7])
    images = torch.rand(6, 3, 4, 4)
    every = profiling.photo_set(images, labels, 10)
    assert every.classes == ["2", "5", "7", "9"] and every.labels.tolist() == [1, 3, 1, 0, 3, 2]
    drawn = [profiling.photo_set(images, labels, 2, seed=s) for s in range(6)]
    assert all(len(d.classes) == 2 and len(d) == sum(int(c) in (5, 9) and 2 or 1
                                                     for c in d.classes) for d in drawn)
    assert len({tuple(d.classes) for d in drawn}) > 1  # the seed picks the classes
    assert torch.equal(profiling.photo_set(images, labels, 2, seed=3).images,
                       profiling.photo_set(images, labels, 2, seed=3).images)


def test_photo_ablations_switch_off_the_units_the_decision_reads():
    """A network that decides between two photos' classes by two of its 1280 last channels
    (one firing more on each photo): relevance ranks those two first, so switching off the
    top unit breaks a photo, while the bottom units, read by nothing, break none."""
    from subnets.models.efficientnet import efficientnet_lite0

    torch.manual_seed(0)
    net = efficientnet_lite0(pretrained=False).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = net.net.forward_head(net.net.forward_features(net.normalize(x)),
                                        pre_logits=True)
        i, j = (features[0] - features[1]).argmax(), (features[0] - features[1]).argmin()
        d = features[:, i] - features[:, j]  # d[0] > d[1]: the decision threshold between
        head = net.net.classifier
        head.weight.zero_()
        head.bias.zero_()
        head.weight[3, i], head.weight[3, j] = 100.0, -100.0  # class 3: photo 0
        head.bias[3] = -100.0 * float(d.mean())  # class 8 (logit 0): photo 1
    photos = profiling.photo_set(x, torch.tensor([3, 8]), 2)
    found = profiling.photo_ablations((net, net), photos, ["net.bn2"], 1 / 1280, n_steps=8)
    result = found["trained"][("efficientnet_lite0", 0)]
    assert result.table.query("end == 'none'").accuracy_class.tolist() == [1.0, 1.0]
    assert result.class_drop("top", 1 / 1280) > 0
    assert result.class_drop("bottom", 1 / 1280) == 0


def test_described_puts_the_estimate_first():
    row = profiling.colour_gap_claim(dissected(0.5), dissected(0.0))
    assert profiling.described([row])[0].shown.startswith(f"{row.estimate.format(row.fmt)}: ")

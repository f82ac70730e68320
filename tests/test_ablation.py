import copy

import pytest
import torch
from test_attribution import ChannelVote, toy_imageset
from torch import nn

from subnets import ablation, dissection
from subnets.methods import LayerScores

# unit k of ChannelVote's ReLU matters for class k
DIAGONAL = LayerScores({"relu": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})


def test_ranked_units_take_the_top_bottom_or_random_units_breaking_ties_by_index():
    s = torch.tensor([0.1, 0.5, 0.3, 0.5, 0.0])
    assert ablation.ranked_units(s, 1).tolist() == [1]
    assert ablation.ranked_units(s, 2).tolist() == [1, 3]
    assert ablation.ranked_units(s, 2, "bottom").tolist() == [0, 4]
    g = torch.Generator().manual_seed(0)
    drawn = ablation.ranked_units(s, 3, "random", g)
    assert len(drawn) == 3 and len(set(drawn.tolist())) == 3 and drawn.equal(drawn.sort().values)
    with pytest.raises(ValueError, match="end"):
        ablation.ranked_units(s, 2, "middle")
    with pytest.raises(ValueError, match="count"):
        ablation.ranked_units(s, 6)


def test_unit_quotas_give_every_network_the_same_share_of_its_units():
    # a small ResNet18's ablated layers: 15 layers of 16 to 128 units (832 in all)
    sizes = dict(enumerate([16] * 4 + [32] * 4 + [64] * 4 + [128] * 3))
    ceil = ablation.unit_quotas(sizes, 0.01, "ceil")
    assert sum(ceil.values()) == 18  # the old "1 %": 18 / 832 = 2.2 %
    share = ablation.unit_quotas(sizes, 0.01)
    assert sum(share.values()) == round(0.01 * 832) == 8
    # in proportion to size, by largest remainder: 0.64 (64 units) before 0.32 before 0.28
    assert [share[k] for k in (0, 4, 5, 8, 12)] == [0, 1, 0, 1, 1]
    for f in (0.01, 0.02, 0.03):
        q = ablation.unit_quotas({"a": 96, "b": 96, "c": 64}, f)
        assert sum(q.values()) == round(f * 256)
    with pytest.raises(ValueError, match="rounding"):
        ablation.unit_quotas(sizes, 0.01, "floor")


def test_relevance_ablation_switches_off_the_ranked_units():
    data = toy_imageset()
    result = ablation.relevance_ablation(ChannelVote(), ["relu"], data, DIAGONAL,
                                            fractions=[0.5], ends=("top", "bottom", "random"),
                                            random_draws=3)
    row = result.table.set_index(["class", "end", "draw"])
    assert row.loc[("zero", "none", 0), "accuracy_class"] == 1.0
    # top: class 0 loses its unit, class 1 keeps its own
    assert row.loc[("zero", "top", 0), "accuracy_class"] == 0.0
    assert row.loc[("zero", "top", 0), "accuracy_others"] == 1.0
    # bottom: the other class's unit goes, class 0 is untouched
    assert row.loc[("zero", "bottom", 0), "accuracy_class"] == 1.0
    assert row.loc[("zero", "bottom", 0), "accuracy_others"] == 0.0
    assert row.loc[("one", "top", 0), "units"] == 1 and row.loc[("one", "top", 0), "share"] == 0.5
    assert len(result.table[result.table.end == "random"]) == 2 * 3
    # per-image correctness: the drops reproduce the accuracies
    top = result.drops("top", 0.5)
    assert top.shape == (8, 2) and (top[data.labels.numpy() == 0, 0] == 1).all()
    assert result.class_drop("top", 0.5) == 1.0 and result.other_drop("top", 0.5) == 0.0
    assert result.class_drop("bottom", 0.5) == 0.0 and result.other_drop("bottom", 0.5) == 1.0
    assert result.specificity("top", 0.5) == 1.0 and result.specificity("bottom", 0.5) == -1.0
    frame = result.frame().set_index(["class", "end", "draw"])
    assert "none" not in frame.index.get_level_values("end")
    assert frame.loc[("zero", "top", 0), ["drop_class", "drop_others", "specificity"]].tolist() \
        == [1.0, 0.0, 1.0]


def test_relevance_ablation_checks_its_arguments():
    data = toy_imageset()
    with pytest.raises(ValueError, match="relevance: no scores for layers"):
        ablation.relevance_ablation(ChannelVote(), ["conv"], data, DIAGONAL)
    with pytest.raises(ValueError, match="ends"):
        ablation.relevance_ablation(ChannelVote(), ["relu"], data, DIAGONAL, ends=("middle",))


class TinyResidual(nn.Module):
    """x -> conv -> BN -> + x -> ReLU: the unit of the block output has a skip path."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)) + x).mean((2, 3))


def test_relevance_ablation_at_a_site_keeps_the_skip_path():
    data = toy_imageset()
    model = TinyResidual().eval()
    at_relu = ablation.relevance_ablation(model, ["relu"], data, DIAGONAL, fractions=[0.5])
    sites = dissection.unit_sites(model, ["relu"])
    assert sites == {"relu": "bn"}
    before_add = ablation.relevance_ablation(model, ["relu"], data, DIAGONAL,
                                                fractions=[0.5], sites=sites)
    # zero at the ReLU blinds class 0 entirely; before the addition the identity still
    # carries channel 0, so the class is still recognised
    assert at_relu.class_drop("top", 0.5) == 1.0
    assert before_add.class_drop("top", 0.5) == 0.0


@pytest.mark.gpu
def test_relevance_ablation_on_cuda_matches_the_cpu():
    data = toy_imageset()
    on_cpu = ablation.relevance_ablation(ChannelVote(), ["relu"], data, DIAGONAL,
                                         fractions=[0.5])
    on_gpu = ablation.relevance_ablation(copy.deepcopy(ChannelVote()).cuda(), ["relu"], data,
                                         DIAGONAL, fractions=[0.5])
    assert on_gpu.correct.equal(on_cpu.correct)

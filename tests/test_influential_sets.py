"""Sets found elsewhere: read from the authors' JSON format, refused by file name when
malformed, and set beside Algorithm 1's with hand-computed Jaccard indices and recalls."""

import json

import pytest
import torch
from torch import nn

from subnets.influence import InfluentialFeatures, PenultimateFeatures
from subnets.influential_sets import read_reference_sets, set_agreement


def test_the_authors_format_is_read_class_by_class_whatever_the_key_order(tmp_path):
    file = tmp_path / "resnet20_cifar-10_indices.json"
    file.write_text('{"1": [9, 47, 40], "0": [7, 23, 54]}')
    assert read_reference_sets(file).tolist() == [[7, 23, 54], [9, 47, 40]]


@pytest.mark.parametrize("text", ["not json", '{"0": [1, 2], "2": [3, 4]}',
                                  '{"0": [1, 2], "1": [3]}', '{"0": [-1, 2]}', '[1, 2]'])
def test_a_malformed_file_is_refused_by_name(tmp_path, text):
    file = tmp_path / "sets.json"
    file.write_text(text)
    with pytest.raises(ValueError, match="sets.json: expected a JSON object class index"):
        read_reference_sets(file)
    with pytest.raises(ValueError, match="missing.json"):
        read_reference_sets(tmp_path / "missing.json")


def test_agreement_has_each_class_jaccard_and_recall_with_either_sets(tmp_path):
    # Class a reads features 0 and 2, class b features 1 and 3, b with a bias of 0.1.
    fc = nn.Linear(4, 2)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.5, 0.0], [0.0, 0.5, 0.0, 1.0]]))
        fc.bias.copy_(torch.tensor([0.0, 0.1]))
    test = PenultimateFeatures(torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0],
                                             [0, 1.0, 0, 0]]), torch.tensor([0, 0, 1, 1]))
    ours = torch.tensor([[0, 2], [1, 3]])  # keeps everything each class reads
    found = InfluentialFeatures(indices=ours, histograms=torch.zeros(2, 4), k1=2, k2=2)
    file = tmp_path / "theirs.json"
    file.write_text(json.dumps({"0": [3, 1], "1": [1, 3]}))
    table = set_agreement(fc, test, found, file, ["a", "b"])
    assert table.loc["a", "ours"] == [0, 2] and table.loc["a", "reference"] == [1, 3]
    assert table["Jaccard"].tolist() == [0.0, 1.0, 0.5]
    # Theirs give class a features it does not read: its logit is 0, below b's bias, so
    # a's two images go to b; b's stay right.
    assert table["accuracy, ours"].tolist() == [1.0, 1.0, 1.0]
    assert table["accuracy, reference"].tolist() == [0.0, 1.0, 0.5]
    file.write_text(json.dumps({"0": [0, 9], "1": [1, 3]}))
    with pytest.raises(ValueError, match="theirs.json: expected 2 sets of indices below 4"):
        set_agreement(fc, test, found, file, ["a", "b"])

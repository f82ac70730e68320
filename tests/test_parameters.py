"""Chapter parameters: defaults and presets are read from the chapter, and every bad value
is refused by name before any work."""

import time

import pytest

from subnets import parameters


def test_reads_defaults_and_presets(chapter):
    defaults, presets = parameters.read_chapter(chapter)
    assert defaults == {"dataset": "fashion-mnist", "epochs": 3, "threshold": 0.05,
                        "target_class": 5, "sizes": [1, 2], "use_gpu": False}
    assert presets["paper"] == {"epochs": 30, "threshold": 0.05}


def test_resolve_merges_preset_then_overrides_and_coerces(chapter):
    params = parameters.resolve(chapter, "paper", {"threshold": 1, "sizes": [3]})
    assert params == {"epochs": 30, "threshold": 1.0, "sizes": [3]}
    assert isinstance(params["threshold"], float)


@pytest.mark.parametrize("overrides, message", [
    ({"epoch": 3}, "epoch: not a parameter"),
    ({"epochs": "three"}, "epochs: expected int"),
    ({"epochs": 2.5}, "epochs: expected int"),
    ({"use_gpu": 1}, "use_gpu: expected bool"),
    ({"threshold": -0.1}, "threshold: expected >= 0"),
    ({"epochs": -1}, "epochs: expected >= 0"),
    ({"target_class": 10}, "target_class: expected a class index in 0..9"),
    ({"dataset": "mnist"}, "dataset: unknown dataset 'mnist'"),
    ({"dataset": "imagefolder:/no/such/folder"},
     "dataset: folder '/no/such/folder' does not exist"),
])
def test_bad_parameters_are_named(chapter, overrides, message):
    with pytest.raises(parameters.ParameterError, match=message):
        parameters.resolve(chapter, None, overrides)


def test_unknown_preset_and_chapter(chapter):
    with pytest.raises(parameters.ParameterError, match="presets"):
        parameters.resolve(chapter, "huge", {})
    with pytest.raises(parameters.ParameterError, match="chapters are"):
        parameters.chapter_path("99")


def test_parse_value():
    parse = parameters.parse_value
    assert parse("0.1") == 0.1 and parse("[1, 2]") == [1, 2]
    assert parse("true") is True and parse("fashion-mnist") == "fashion-mnist"


# --- every parameter of every chapter refuses bad values, before any work ---------------

CHAPTERS = sorted(parameters.NOTEBOOKS.glob("[0-9][0-9]_*.md"))
PARAMETERS = [(path, name, default) for path in CHAPTERS
              for name, default in parameters.read_chapter(path)[0].items()]


def wrong_type(default):
    if isinstance(default, bool):
        return "maybe"
    if isinstance(default, (int, float)):
        return "abc"
    if isinstance(default, str):
        return 7
    return [["a"]]  # a list, or None (image_size): a nested list is never a valid value


def out_of_range(path, name, default):
    """A value of the right type that the chapter must refuse; None for booleans."""
    choices = parameters.read_chapter_rules(path)[2]
    if name in choices:
        return ["no-such-choice"] if isinstance(default, list) else "no-such-choice"
    special = {"dataset": "imagenet-22k", "device": "tpu9", "precision": "fp16",
               "broden": "/no/such/folder",
               "weights": {20: "/no/such/file.th"},
               "reference_sets": "/no/such/sets.json", "photos": "cifar10"}
    if name in special:
        return special[name]
    if isinstance(default, bool):
        return None
    assert not isinstance(default, str), \
        f"{name}: a text parameter needs 'choices' in the front matter"
    if isinstance(default, list):
        assert not default or not isinstance(default[0], str), \
            f"{name}: a list of names needs 'choices' in the front matter"
        return [-1]
    return -1


def refused(path, name, value, seconds=10.0):
    start = time.perf_counter()
    with pytest.raises(parameters.ParameterError) as err:
        parameters.resolve(path, None, {name: value})
    assert time.perf_counter() - start < seconds
    message = str(err.value)
    assert "\n" not in message and name in message, message
    return message


@pytest.mark.parametrize("path, name, default", PARAMETERS,
                         ids=[f"{p.stem[:2]}-{n}" for p, n, _ in PARAMETERS])
def test_every_parameter_refuses_a_wrong_type_and_an_out_of_range_value(path, name, default):
    refused(path, name, wrong_type(default))
    bad = out_of_range(path, name, default)
    if bad is not None:
        refused(path, name, bad)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem[:2] for p in CHAPTERS])
def test_every_chapter_refuses_an_unknown_name(path):
    refused(path, "no_such_parameter", 1)


def test_every_chapter_has_dataset_image_size_seeds_device_placebo_and_precision():
    for path in CHAPTERS:
        defaults = parameters.read_chapter(path)[0]
        assert {"dataset", "image_size", "seeds", "device", "placebo", "precision"} \
            <= set(defaults), path.name
        assert defaults["placebo"] is False and defaults["precision"] in ("auto", "fp32"), \
            path.name


def write_folder(root, corrupt=False):
    from PIL import Image

    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(root / cls / f"{i}.png")
    if corrupt:
        (root / "b" / "3.png").write_bytes(b"\x89PNG truncated")


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist"),
    ("empty", "no class sub-folders holding images"),
    ("flat", "no class sub-folders holding images"),
    ("corrupt", "3.png: not a readable image"),
])
def test_every_chapter_names_a_bad_image_folder(tmp_path, layout, message):
    root = tmp_path / layout
    if layout == "empty":
        (root / "a").mkdir(parents=True)
    elif layout == "flat":
        write_folder(tmp_path / "x")
        root.mkdir()
        (tmp_path / "x" / "a" / "0.png").rename(root / "0.png")
    elif layout == "corrupt":
        write_folder(root, corrupt=True)
    for path in CHAPTERS:
        assert message in refused(path, "dataset", f"imagefolder:{root}")


def test_parameter_table_reads_each_line_comment_and_the_paper_preset(tmp_path):
    chapter = tmp_path / "09_demo.md"
    chapter.write_text("""---
subnets:
  presets:
    paper:
      epochs: 200
---

```{code-cell} ipython3
:tags: [parameters]

epochs = 3  # training epochs (the paper: 200)
lr = 0.1
n_train, n_test = 100, 50  # training / test images
```
""")
    table = parameters.parameter_table(str(chapter))
    assert table.to_dict("index") == {
        "epochs": {"default": "3", "meaning": "training epochs (the paper: 200)",
                   "paper": "200"},
        "lr": {"default": "0.1", "meaning": "", "paper": ""},
        "n_train": {"default": "100", "meaning": "training / test images", "paper": ""},
        "n_test": {"default": "50", "meaning": "training / test images", "paper": ""}}
    table_of = parameters.parameter_table
    defaults = {"epochs": 3, "lr": 0.1, "n_train": 100, "n_test": 50}
    assert "this run" not in table_of(str(chapter), defaults)
    assert table_of(str(chapter), {"epochs": 5})["this run"].tolist() == ["5", "0.1", "100", "50"]


def test_weights_are_refused_by_name_unless_each_checkpoint_is_in_place(tmp_path):
    import torch

    path = parameters.chapter_path("04")
    good = tmp_path / "resnet20.th"
    torch.save({"w": torch.zeros(1)}, good)
    assert parameters.resolve(path, None, {"weights": {20: str(good)}, "seeds": 1})
    # papermill injects a dict's keys as strings; the chapter gets them back as depths
    namespace = {**parameters.read_chapter(path)[0], "weights": {"20": str(good)}, "seeds": 1}
    parameters.check_chapter("04", namespace)
    assert namespace["weights"] == {20: str(good)}
    for value, message in [({20: str(tmp_path / "missing.th")}, r"weights\[20\]: no file"),
                           ({18: str(good)}, "for the depths studied"),
                           ({20: 7}, "for the depths studied")]:
        with pytest.raises(parameters.ParameterError, match=message):
            parameters.resolve(path, None, {"weights": value, "seeds": 1})
    with pytest.raises(parameters.ParameterError, match="expected seeds = 1, got 3"):
        parameters.resolve(path, None, {"weights": {20: str(good)}})
    bad_hash = tmp_path / "resnet20-0123abcd.th"
    bad_hash.write_bytes(good.read_bytes())
    with pytest.raises(parameters.ParameterError, match="SHA-256"):
        parameters.resolve(path, None, {"weights": {20: str(bad_hash)}, "seeds": 1})


def test_reference_sets_are_refused_by_name_unless_the_file_holds_sets(tmp_path):
    path = parameters.chapter_path("04")
    good = tmp_path / "sets.json"
    good.write_text('{"0": [1, 2], "1": [3, 4]}')
    assert parameters.resolve(path, None, {"reference_sets": str(good)})
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    for value, message in [(str(tmp_path / "missing.json"), "reference_sets: .*missing.json"),
                           (str(bad), "reference_sets: .*bad.json: expected a JSON object")]:
        with pytest.raises(parameters.ParameterError, match=message):
            parameters.resolve(path, None, {"reference_sets": value})


def test_chapter_2s_weights_are_keyed_by_network_and_fit_only_the_full_networks(tmp_path):
    import torch

    path = parameters.chapter_path("02")
    good = tmp_path / "alexnet.pth"
    torch.save({"w": torch.zeros(1)}, good)
    full = {"network_scale": "full", "image_size": 64}
    assert parameters.resolve(path, None, {"weights": {"alexnet": str(good)}, **full})
    for value, extra, message in [
            ({"alexnet": str(good)}, {}, "fit only network_scale = 'full', got 'small'"),
            ({"vgg19": str(good)}, full, "network -> file or URL for the networks studied"),
            ({"alexnet": str(tmp_path / "no.pth")}, full, r"weights\[alexnet\]: no file")]:
        with pytest.raises(parameters.ParameterError, match=message):
            parameters.resolve(path, None, {"weights": value, **extra})

"""A chapter's parameters: read from its ``parameters`` cell and front matter, resolved
against a preset and ``-p`` overrides, and range-checked by name before any work.

A chapter's first code cell (tagged ``parameters``) holds ``name = literal`` lines, each
with its meaning as the line's comment; its front matter lists presets (``subnets:
presets:``) and the allowed values of name parameters (``subnets: choices:``).
``check_chapter`` is what a chapter calls right after that cell; ``resolve`` is what the
command line (``subnets.run``) calls before papermill executes anything.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from . import data, devices

__all__ = ["NOTEBOOKS", "ParameterError", "check", "check_chapter", "chapter_path",
           "read_chapter", "read_chapter_rules", "parameter_table", "parse_value", "resolve"]

NOTEBOOKS = data.REPO_ROOT / "notebooks"


class ParameterError(ValueError):
    """A chapter parameter is unknown, of the wrong type, or out of range; the message
    starts with its name.

    Example:
        >>> try:
        ...     check(epochs=-1)
        ... except ParameterError as err:
        ...     print(err)
        epochs: expected >= 0, got -1
    """


# --- range checks, by parameter name (chapters share names, so they share rules) ------

def _values(name: str, value: Any, kind=(int, float)) -> list:
    """``value`` (or each of its items) as a list, refusing any that is not a ``kind``."""
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, kind):
            raise ParameterError(f"{name}: expected {'a number' if kind == (int, float) else kind}"
                                 f", got {v!r}")
    return values


def _at_least(low: float) -> Callable[[str, Any, dict], None]:
    def rule(name: str, value: Any, _params: dict) -> None:
        for v in _values(name, value):
            if v < low:
                raise ParameterError(f"{name}: expected >= {low}, got {v}")
    return rule


def _between(low: float, high: float) -> Callable[[str, Any, dict], None]:
    def rule(name: str, value: Any, _params: dict) -> None:
        for v in _values(name, value):
            if not low <= v <= high:
                raise ParameterError(f"{name}: expected a value in [{low}, {high}], got {v}")
    return rule


def _dataset_rule(name: str, value: Any, _params: dict) -> None:
    """A known dataset whose files are in place and whose images open (``data.check``)."""
    _values(name, value, str)
    try:
        data.check(value)
    except (ValueError, FileNotFoundError) as err:
        message = str(err).split("\n")[0]
        raise ParameterError(message if message.startswith("dataset:") else
                             f"{name}: {message}") from None


def _photos_rule(name: str, value: Any, params: dict) -> None:
    """"" (the repository's 20 photos) or an image folder of ImageNet WordNet-ID classes."""
    _values(name, value, str)
    if value and not value.startswith("imagefolder:"):
        raise ParameterError(f"{name}: expected '' or 'imagefolder:<folder>', got {value!r}")
    if value:
        _dataset_rule(name, value, params)


def _class_count(params: dict) -> int | None:
    """The number of classes of the chapter's dataset; None for a bad dataset, which the
    dataset rule reports."""
    try:
        return len(data.class_names(params.get("dataset", "fashion-mnist")))
    except (ValueError, FileNotFoundError):
        return None


def _class_rule(name: str, value: Any, params: dict) -> None:
    """Class indices must exist in the chapter's dataset."""
    n = _class_count(params)
    if n is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
            raise ParameterError(f"{name}: expected a class index in 0..{n - 1}, got {v!r}")


def _device_rule(name: str, value: Any, _params: dict) -> None:
    try:
        devices.device(value)
    except ValueError as err:
        raise ParameterError(str(err).replace("device:", f"{name}:", 1)) from None


def _image_size_rule(name: str, value: Any, _params: dict) -> None:
    """None (the dataset's own size) or a side of at least 8 pixels."""
    if value is not None:
        _at_least(8)(name, value, _params)


def _folder_rule(name: str, value: Any, _params: dict) -> None:
    """An empty string (not used) or an existing folder."""
    _values(name, value, str)
    if value and not data.data_path(value).is_dir():
        raise ParameterError(f"{name}: folder {value!r} does not exist (relative folders are "
                             f"taken in the data folder {data.data_dir()})")


def _precision_rule(name: str, value: Any, _params: dict) -> None:
    _values(name, value, str)
    if value not in devices.PRECISIONS:
        raise ParameterError(f"{name}: expected one of {list(devices.PRECISIONS)}, got {value!r}")


def _names_rule(name: str, value: Any, params: dict) -> None:
    """A list of names, one per class of the chapter's dataset, or [] (the class names)."""
    values = _values(name, value, str)
    n = _class_count(params)
    if values and n is not None and len(values) != n:
        raise ParameterError(f"{name}: expected one name per class ({n}), got {len(values)}")


def _weights_rule(name: str, value: Any, params: dict) -> None:
    """Checkpoints, each file in place with its SHA-256 (``weights.weights_file``): by depth
    where the chapter studies depths (chapter 4: loaded, not trained, so one seed: a
    checkpoint is one network), else by network name (chapter 2: torchvision's ImageNet
    weights, fine-tuned, for ``network_scale`` "full")."""
    from .weights import WeightsError, weights_file

    if not isinstance(value, dict):
        raise ParameterError(f"{name}: expected a dict network -> checkpoint, got {value!r}")
    by_depth = "depths" in params
    key = "depth" if by_depth else "network"
    studied = ({params.get("depth"), *params["depths"]} if by_depth
               else set(params.get("networks", []))) - {None}
    if value and by_depth and params.get("seeds", 1) != 1:
        raise ParameterError(f"{name}: a checkpoint is one network per depth: expected "
                             f"seeds = 1, got {params.get('seeds')}")
    if value and not by_depth and params.get("network_scale") != "full":
        raise ParameterError(f"{name}: ImageNet checkpoints fit only network_scale = "
                             f"'full', got {params.get('network_scale')!r}")
    for network, spec in value.items():
        if network not in studied or not isinstance(spec, str):
            raise ParameterError(f"{name}: expected {key} -> file or URL for the {key}s "
                                 f"studied ({sorted(studied)}), got {network!r}: {spec!r}")
        try:
            weights_file(spec, parameter=f"{name}[{network}]")
        except WeightsError as err:
            raise ParameterError(str(err)) from None


def _reference_sets_rule(name: str, value: Any, _params: dict) -> None:
    """"" (none) or a JSON file of influential sets (``influential_sets.read_reference_sets``)."""
    from .influential_sets import read_reference_sets

    if value:  # its type (str) is checked against the default's
        try:
            read_reference_sets(value)
        except ValueError as err:
            raise ParameterError(f"{name}: {err}") from None


def _rule_for(name: str):
    """The range rule for a parameter name: exact names first, then name patterns."""
    exact = {"dataset": _dataset_rule, "device": _device_rule, "image_size": _image_size_rule,
             "precision": _precision_rule,
             "seed": _at_least(0), "quantile": _between(0.0, 1.0), "broden": _folder_rule,
             "class_concepts": _names_rule, "weights": _weights_rule,
             "reference_sets": _reference_sets_rule, "photos": _photos_rule,
             "n_photo_classes": _at_least(1),  # a count, not a class index
             "layers": _at_least(0),  # layer indices
             "n_train": _at_least(0), "n_test": _at_least(0)}  # 0 means all images
    if name in exact:
        return exact[name]
    if name.endswith("_folder"):
        return _folder_rule
    if name.endswith(("class", "classes")):
        return _class_rule
    if name.endswith(("fraction", "fractions", "rate", "rates", "sparsity")):
        return _between(0.0, 1.0)
    if name.endswith(("threshold", "thresholds", "noise", "lr", "sigma", "std", "tol", "decay",
                      "levels", "weight", "weights", "margin", "epochs")) \
            or name.startswith("epochs"):
        return _at_least(0)
    if name.startswith(("n_", "k_", "num_")) or name.endswith(
            ("_size", "_steps", "seeds", "depth", "depths", "widths", "width", "k1", "k2",
             "top_k", "resamples")):
        return _at_least(1)
    return None


def check(choices: dict[str, list] | None = None, **params: Any) -> dict[str, Any]:
    """Range-check chapter parameters by name (and against ``choices``, name -> allowed
    values); returns them unchanged or raises ``ParameterError`` naming the first bad
    one. Chapters call it right after their parameters cell, so papermill runs fail
    before any work too. Booleans are checked by type only.

    Args:
        choices: parameter name -> its allowed values (the front matter's
            ``subnets: choices:``), or None.
        **params: the parameters, by name; the name picks the range rule.

    Returns:
        ``params``, unchanged.

    Raises:
        ParameterError: naming the first bad parameter.

    Example:
        >>> check(lr=0.01, seeds=3)
        {'lr': 0.01, 'seeds': 3}
        >>> check({"optimizer": ["adam", "sgd"]}, optimizer="lbfgs")
        Traceback (most recent call last):
        ...
        subnets.parameters.ParameterError: optimizer: expected one of ['adam', 'sgd'], got 'lbfgs'
    """
    for name, allowed in (choices or {}).items():
        if name in params:
            values = params[name] if isinstance(params[name], (list, tuple)) else [params[name]]
            for v in values:
                if v not in allowed:
                    raise ParameterError(f"{name}: expected one of {allowed}, got {v!r}")
    for name, value in params.items():
        rule = None if name in (choices or {}) else _rule_for(name)
        if rule is not None and not isinstance(value, bool) \
                and (value is not None or name == "image_size"):
            rule(name, value, params)
    return params


def check_chapter(chapter: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Check every parameter of ``chapter`` as it stands in ``namespace`` (a chapter's
    ``globals()`` after its parameters cell and papermill's injected cell): types against
    the defaults, then ``check`` with the front matter's choices. The checked values go
    back into ``namespace`` in the defaults' types (an int given for a float, a dict's
    keys that papermill injected as strings).

    Args:
        chapter: the chapter's number or file name (``chapter_path``).
        namespace: the chapter's variables.

    Returns:
        The parameters' values, by name, coerced to the defaults' types.

    Raises:
        ParameterError: naming the first bad parameter.

    Example:
        >>> defaults, _ = read_chapter(chapter_path("01"))
        >>> check_chapter("01", defaults) == defaults
        True
    """
    defaults, _presets, choices = read_chapter_rules(chapter_path(chapter))
    params = {name: _coerce(name, namespace[name], default) for name, default in defaults.items()}
    namespace.update(check(choices, **params))
    return params


# --- reading a chapter ----------------------------------------------------------------

def chapter_path(chapter: str) -> Path:
    """The MyST notebook of a chapter.

    Args:
        chapter: its number ("01"), the start of its file name, or a path to a ``.md``.

    Returns:
        The notebook's path.

    Raises:
        ParameterError: naming ``chapter`` when it matches no notebook or several.

    Example:
        >>> chapter_path("01").name
        '01_class_subnetworks.md'
    """
    p = Path(chapter)
    if p.suffix == ".md" and p.is_file():
        return p
    matches = sorted(NOTEBOOKS.glob(f"{chapter}_*.md")) or sorted(NOTEBOOKS.glob(f"{chapter}*.md"))
    if len(matches) != 1:
        known = ", ".join(sorted(q.stem for q in NOTEBOOKS.glob("*.md")))
        raise ParameterError(f"chapter: {chapter!r} matches {len(matches)} notebooks; "
                             f"chapters are: {known}")
    return matches[0]


def read_chapter(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The defaults of a chapter's ``parameters`` cell and the presets of its front matter.

    Args:
        path: the MyST notebook.

    Returns:
        (name -> default, preset name -> its values).

    Example:
        >>> defaults, presets = read_chapter(chapter_path("01"))
        >>> "seeds" in defaults, "smoke" in presets
        (True, True)
    """
    defaults, presets, _choices = read_chapter_rules(path)
    return defaults, presets


def _parameters_cell(path: Path):
    """The chapter's notebook and the source of its one ``parameters`` cell."""
    import jupytext

    nb = jupytext.read(path)
    cells = [c for c in nb.cells
             if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{path.name}: expected one code cell tagged 'parameters', "
                             f"found {len(cells)}")
    return nb, cells[0].source


def _assignments(source: str):
    """The parameters cell's assignments of literals, in order, as (name, value, line):
    ``name = literal``, or ``a, b = literal, literal`` for a line of related parameters
    (one comment says what they are)."""
    for node in ast.parse(source).body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name):
            yield target.id, ast.literal_eval(node.value), node.lineno
        elif isinstance(target, ast.Tuple) and all(isinstance(t, ast.Name) for t in target.elts):
            values = ast.literal_eval(node.value)
            if not isinstance(values, tuple) or len(values) != len(target.elts):
                raise ParameterError(f"line {node.lineno} of the parameters cell: expected as "
                                     f"many values as names ({len(target.elts)})")
            for t, value in zip(target.elts, values):
                yield t.id, value, node.lineno


def read_chapter_rules(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict]:
    """``read_chapter`` and the allowed values of the front matter's ``subnets: choices:``
    (for parameters whose values are names: networks, optimisers, layers).

    Args:
        path: the MyST notebook.

    Returns:
        (defaults, presets, choices).

    Raises:
        ParameterError: unless the notebook has one code cell tagged ``parameters``.

    Example:
        >>> read_chapter_rules(chapter_path("01"))[2]["gradcam_layer"]
        ['conv3', 'relu3']
    """
    nb, source = _parameters_cell(path)
    defaults = {name: value for name, value, _line in _assignments(source)}
    meta = nb.metadata.get("subnets", {})
    return defaults, meta.get("presets", {}), meta.get("choices", {})


def parameter_table(chapter: str, values: dict[str, Any] | None = None) -> pd.DataFrame:
    """The parameters cell of ``chapter`` as a table a reader can scan: each parameter's
    default, its meaning (the comment on its line) and its value in the ``paper`` preset
    ("" where the preset keeps the default).

    Args:
        chapter: the chapter's number (``"04"``) or file.
        values: the values this run used (a chapter passes ``globals()``); where any differs
            from its default, a column "this run" shows them all.

    Returns:
        A DataFrame indexed by parameter name.

    Example:
        >>> table = parameter_table("04")
        >>> list(table.columns)
        ['default', 'meaning', 'paper']
        >>> table.loc["k1", "default"]
        '5'
    """
    import io
    import tokenize

    path = chapter_path(chapter)
    nb, source = _parameters_cell(path)
    comments = {tok.start[0]: tok.string.lstrip("# ").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    paper = nb.metadata.get("subnets", {}).get("presets", {}).get("paper", {})
    rows = {}
    for name, default, line in _assignments(source):
        rows[name] = {"default": repr(default), "meaning": comments.get(line, ""),
                      "paper": repr(paper[name]) if name in paper else ""}
        if values is not None:
            rows[name]["this run"] = repr(values.get(name, default))
    table = pd.DataFrame.from_dict(rows, orient="index")
    if values is not None and (table["this run"] == table["default"]).all():
        table = table.drop(columns="this run")
    table.index.name = "parameter"
    return table


def parse_value(text: str) -> Any:
    """A command-line value as a Python literal (``0.1``, ``[1, 2]``, ``True``), else a
    string; ``true``, ``false`` and ``none`` in any case are the constants.

    Args:
        text: the value as typed.

    Returns:
        The value.

    Example:
        >>> parse_value("[1, 2]"), parse_value("false"), parse_value("vgg11")
        ([1, 2], False, 'vgg11')
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        lowered = text.lower()
        return {"true": True, "false": False, "none": None}.get(lowered, text)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` in the type of ``default`` (an int is a float too), or ``ParameterError``."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) == isinstance(value, bool):
        if isinstance(default, float) and isinstance(value, int):
            return float(value)
        if isinstance(default, dict) and isinstance(value, dict):
            # papermill injects a dict's keys as strings: "20" is the 20 it was given
            return {int(k) if isinstance(k, str) and k.isdigit() else k: v
                    for k, v in value.items()}
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
            if default:
                return type(default)(_coerce(name, v, default[0]) for v in value)
            return type(default)(value)
        if isinstance(value, type(default)):
            return value
    raise ParameterError(f"{name}: expected {type(default).__name__} like {default!r}, "
                         f"got {value!r}")


def resolve(path: Path, preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The parameters to run ``path`` with: preset values, then overrides, all checked.

    Args:
        path: the MyST notebook.
        preset: one of its presets, or None.
        overrides: name -> value, applied after the preset.

    Returns:
        The parameters that differ from the defaults, coerced to the defaults' types.

    Raises:
        ParameterError: naming an unknown preset or parameter, or a bad value.

    Example:
        >>> resolve(chapter_path("01"), "smoke", {"seeds": 1})["seeds"]
        1
        >>> resolve(chapter_path("01"), None, {"epoch": 1})
        Traceback (most recent call last):
        ...
        subnets.parameters.ParameterError: epoch: not a parameter of 01_class_subnetworks; ...
    """
    defaults, presets, choices = read_chapter_rules(path)
    params: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ParameterError(f"preset: {path.stem} has presets {sorted(presets)}, "
                                 f"not {preset!r}")
        params.update(presets[preset])
    params.update(overrides)
    for name, value in params.items():
        if name not in defaults:
            raise ParameterError(f"{name}: not a parameter of {path.stem}; "
                                 f"its parameters are {sorted(defaults)}")
        params[name] = _coerce(name, value, defaults[name])
    check(choices, **{**defaults, **params})
    return params

"""subnets: the shared library of the book *Sub-networks of CNNs, re-executed*.

One module per method; chapters compose them. See the book's introduction.

Every method has one of the shapes in ``subnets.methods``: an attribution is a class built
from the model (and the layer or layers it reads) whose ``attribute(inputs, target=None)``
gives one map per input (``GradCAM(model, "conv3").attribute(x, target=y)``); what is not
one has a verb of its own (``score``, ``select``, ``build``, ``dissect``), and every
result is read the same way, ``result[layer]`` (``methods.LayerScores``). Arguments come in
one order everywhere: model, layer(s), inputs, target, then settings. Hooks live in context
managers that remove them (``hooks.Recorder``, ``hooks.Ablation``). Each module lists its
public names in ``__all__``; names starting with ``_`` are internal.
"""

__version__ = "0.1.0"

from .devices import device  # the one public entry point: subnets.device("auto")

__all__ = ["device"]

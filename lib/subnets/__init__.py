"""subnets: the shared library of the book *Sub-networks of CNNs, re-executed*.

One module per method; chapters compose them. See the book's introduction.
"""

__version__ = "0.1.0"

from .devices import device  # the one public entry point: subnets.device("auto")

__all__ = ["device"]

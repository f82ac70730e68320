"""subnets: the shared library of the book *Sub-networks of CNNs, re-executed*.

One module per method; chapters compose them. See the book's introduction.
"""

__version__ = "0.1.0"

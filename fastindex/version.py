"""fastindex's version: what ``--version`` prints and the tables' provenance records."""

__version__ = "0.1.0"

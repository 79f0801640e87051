"""KIKI: the domain of the platform. Plain Python; this package never imports Ray."""

__version__ = "0.1.0"

"""Chaos Toolkit extension for Contour."""

__version__ = "0.1.0"

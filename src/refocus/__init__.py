"""refocus: make out-of-focus fluorescence microscopy images in focus again."""

__version__ = "0.1.0"

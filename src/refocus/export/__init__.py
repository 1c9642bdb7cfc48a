"""Export a model file to TorchScript, ONNX or a bioimage.io package."""

from refocus.export.bioimageio import *  # noqa: F403  (split into modules by issue 12)

"""napari plugin (npe2, manifest ``napari.yaml``): refocus an image layer from a model file.

Install with ``pip install "refocus-microscopy[napari]"``; napari then lists *Refocus* under
Plugins. Nothing here is imported by the rest of refocus, so napari stays optional.
"""

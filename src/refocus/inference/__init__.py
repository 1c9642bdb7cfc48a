"""Ways to run a trained model: the :class:`Refocuser` (any size, by tiles), its back-ends,
files and folders, chunk-wise OME-Zarr, the watch folder and the acquisition hook."""

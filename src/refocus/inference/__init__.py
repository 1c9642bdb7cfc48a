"""Ways to run a trained model: the :class:`~refocus.inference.refocuser.Refocuser` (any
size, by tiles: :mod:`.tiling`, sized by :mod:`.receptive` and :mod:`.memory`, in the
input's units by :mod:`.flux`), its back-ends (:mod:`.backends`), files and folders
(:mod:`.files`), chunk-wise OME-Zarr (:mod:`.chunked`), the watch folder (:mod:`.watch`)
and the acquisition hook (:mod:`.acquisition`)."""

"""The shipped default model: nuclei (Hoechst-like), widefield, ~0.65 um pixels.

Made by ``refocus train --recipe nuclei-widefield --out nuclei-widefield-v1.pt`` (seed 0,
every setting in the file's ``train_config``) from the 8 in-focus BBBC006 fields that ship
with refocus; its card: docs/models/nuclei-widefield-v1.md.
"""

from refocus.zoo import MODELS, PretrainedModel

#: Measured by benchmarks/bench_pretrained.py on the held-out wells (docs/models card).
METRICS = {
    "in_focus_psnr_db": "44.1-46.0 on shipped in-focus fields a02-a04 (against themselves)",
    "real_z00_focus_estimate_um": "35-38 -> 0.5-1.2 (refocus focus, 4 real z00 fields)",
}

MODELS.register("nuclei-widefield-v1", PretrainedModel(
    name="nuclei-widefield-v1",
    summary="nuclei (Hoechst), widefield NA 0.45, ~0.65 um px, both sides of focus",
    arch="nafnet",
    file="nuclei-widefield-v1.pt",
    sha256="e8d0f12b99606367c272280679a41e7e5b87c637e0a0661efcab46114fbf0d11",
    default=True,
    training_data="the 8 real in-focus BBBC006 w1 fields shipped with refocus (U2OS, Hoechst "
                  "33342); wells a02 a04 a05 a08 a09 train, a06 validates, a03 a07 held out; "
                  "defocus simulated on the fly with the calibrated optics, -33..+33 um",
    recipe="refocus train --recipe nuclei-widefield",
    metrics=METRICS,
    limits="nuclear stains imaged widefield with a low-NA objective at ~0.65 um pixels, "
           "up to ~35 um from focus; other stains, confocal or other pixel sizes: measure "
           "first (refocus evaluate) or fine-tune (refocus train --init nuclei-widefield-v1)",
    card="docs/models/nuclei-widefield-v1.md",
))

"""The first shipped model, the default until nuclei-widefield-v2: nuclei (Hoechst-like),
widefield, ~0.65 um pixels.

Made by ``refocus train --recipe nuclei-widefield --out nuclei-widefield-v1.pt`` (seed 0,
every setting in the file's ``train_config``) from the 8 in-focus BBBC006 fields that ship
with refocus; its card: docs/models/nuclei-widefield-v1.md.
"""

from refocus.zoo import MODELS, PretrainedModel

#: Measured by benchmarks/bench_pretrained.py on the held-out wells (docs/models card).
METRICS = {
    "held_out_psnr_db_model_vs_identity": "z0 28.2/23.0, z5 32.5/24.9, z10 35.6/29.0, "
                                          "z22 31.6/29.0, z32 27.8/22.3",
    "held_out_psnr_db_rl_blind": "z0 29.8, z5 32.8, z10 40.1, z22 41.2, z32 36.3",
    "in_focus_psnr_db_ssim": "46.3 / 0.991 (z = 16 against itself)",
    "macs_per_pixel": 41_732,
    "parameters": 3_860_145,
}

MODELS.register("nuclei-widefield-v1", PretrainedModel(
    name="nuclei-widefield-v1",
    summary="nuclei (Hoechst), widefield NA 0.45, ~0.65 um px, both sides of focus",
    arch="nafnet",
    file="nuclei-widefield-v1.pt",
    sha256="e8d0f12b99606367c272280679a41e7e5b87c637e0a0661efcab46114fbf0d11",
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

"""nuclei-widefield-v2: v1's network and data with a Wiener-deconvolved copy of the image
as a second input channel (:mod:`refocus.guides`).

Made by ``refocus train --recipe nuclei-widefield-wiener --out v2.pt`` (seed 0, every
setting in the file's ``train_config``) from the 8 in-focus BBBC006 fields that ship with
refocus, then stored by ``python scripts/ship_model.py v2.pt nuclei-widefield-v2.pt
--keep-below 10000`` (float16 weights, small tensors float32; outputs within 3.5e-4 of the
float32 file on the shipped fields); its card: docs/models/nuclei-widefield-v2.md.
"""

from refocus.zoo import MODELS, PretrainedModel

#: Measured by benchmarks/bench_pretrained.py on the held-out wells
#: (benchmarks/results/pretrained-v2.md; docs/models card).
METRICS = {
    "held_out_psnr_db_model_vs_identity": "z0 30.0/23.0, z5 33.9/24.9, z10 40.1/29.0, "
                                          "z22 39.2/29.0, z32 34.7/22.3",
    "held_out_psnr_db_rl_blind": "z0 29.8, z5 32.8, z10 40.1, z22 41.2, z32 36.3",
    "in_focus_psnr_db_ssim": "47.1 / 0.997 (z = 16 against itself)",
    "macs_per_pixel": 41_876,
    "parameters": 3_860_289,
}

MODELS.register("nuclei-widefield-v2", PretrainedModel(
    name="nuclei-widefield-v2",
    summary="nuclei (Hoechst), widefield NA 0.45, ~0.65 um px, both sides of focus; "
            "sees a Wiener-deconvolved copy of the image",
    arch="nafnet",
    file="nuclei-widefield-v2.pt",
    sha256="390a6aba823453aeac4fcbbf6c4b18c39f6ed684a7bb1de4c66c828039fa33ec",
    default=True,
    training_data="the 8 real in-focus BBBC006 w1 fields shipped with refocus (U2OS, Hoechst "
                  "33342); wells a02 a04 a05 a08 a09 train, a06 validates, a03 a07 held out; "
                  "defocus simulated on the fly with the calibrated optics, -33..+33 um",
    recipe="refocus train --recipe nuclei-widefield-wiener",
    metrics=METRICS,
    limits="as nuclei-widefield-v1, and the guide's PSF is estimated with the nominal "
           "BBBC006 optics (NA 0.45, 0.645 um px): on another microscope that PSF is wrong; "
           "measure first (refocus evaluate) or fine-tune (refocus train --init "
           "nuclei-widefield-v2)",
    card="docs/models/nuclei-widefield-v2.md",
))

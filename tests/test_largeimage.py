"""OME-Zarr images bigger than memory: chunk-wise, bounded memory, same answer as in memory;
and the same work sent to a dask.distributed cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from test_formats import write_ome_zarr
from test_predict import near_identity_net

from refocus.images import open_ome_zarr, read_image, read_plane
from refocus.inference.chunked import refocus_ome_zarr
from refocus.inference.files import expand_inputs, plan_jobs, run_jobs
from refocus.inference.refocuser import Refocuser

BIG = 4096

#: Runs in a fresh interpreter and measures each phase's peak resident memory (VmHWM,
#: reset between phases through /proc/self/clear_refs; ``ru_maxrss`` would also remember
#: the forking pytest process).
MEMORY_PROBE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[4])
    from test_predict import near_identity_net
    from refocus.images import open_ome_zarr
    from refocus.inference.chunked import refocus_ome_zarr
    from refocus.inference.refocuser import Refocuser

    def status_mb(key):
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    def start_phase():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS := current RSS
        return status_mb("VmRSS")

    def phase_peak(base):
        return status_mb("VmHWM") - base

    refocuser = Refocuser(near_identity_net(), device="cpu", mode="eager")
    refocuser._halo = 2  # two 3x3 convolutions
    refocuser.predict(np.ones((64, 64), np.uint16), tile=64)  # warm up torch
    small_in, big_in, big_out = sys.argv[1:4]
    base = start_phase()
    refocus_ome_zarr(refocuser, small_in, big_out + ".small", tile=320, overlap=48)
    small_mb = phase_peak(base)  # includes one-time setup: zarr's I/O loop, Dask threads
    base = start_phase()
    start = time.perf_counter()
    refocus_ome_zarr(refocuser, big_in, big_out, tile=320, overlap=48)
    chunked_s = time.perf_counter() - start
    chunked_mb = phase_peak(base)
    out = open_ome_zarr(big_out).level(0)[:]
    image = open_ome_zarr(big_in).level(0)[:]
    base = start_phase()
    start = time.perf_counter()
    whole = refocuser.predict(image, tile=8192)
    whole_s = time.perf_counter() - start
    whole_mb = phase_peak(base)
    lo = np.percentile(image, 1)
    print(json.dumps(dict(
        small_mb=small_mb, chunked_mb=chunked_mb, chunked_s=chunked_s,
        whole_mb=whole_mb, whole_s=whole_s,
        max_diff=int(np.abs(out.astype(np.int32) - whole).max()),
        changed=float(np.mean(out != image)),
        flux_rel=float(abs((out - lo).sum(dtype=np.float64) / (image - lo).sum(dtype=np.float64)
                           - 1)))))
""")


@pytest.fixture(scope="module")
def mosaic(z00_files) -> np.ndarray:
    """A 4096x4096 uint16 mosaic of the 24 real defocused fields (6 x 8 of 696x520)."""
    fields = [read_plane(p) for p in z00_files]
    rows = [np.concatenate(fields[r * 6 : r * 6 + 6], axis=1) for r in range(4)]
    return np.tile(np.concatenate(rows, axis=0), (2, 1))[:BIG, :BIG]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_4096_ome_zarr_runs_in_bounded_memory(mosaic, tmp_path, request):
    """Peak RSS of a fresh process: a 1024^2 image first (paying the one-time costs), then
    the 4096^2 one (16x the pixels) must add less than its own float32 footprint, and
    far less than predicting it in memory does."""
    small, src, dst = tmp_path / "small.zarr", tmp_path / "big.zarr", tmp_path / "out" / "big.zarr"
    write_ome_zarr(small, mosaic[:1024, :1024], "YX", (512, 512), levels=2)
    write_ome_zarr(src, mosaic, "YX", (512, 512), levels=4)
    args = [str(small), str(src), str(dst), str(request.path.parent)]
    result = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *args],
                            capture_output=True, text=True, timeout=300, check=True)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    print(stats)  # shown with -s: the numbers behind the bounds below
    float_image_mb = BIG * BIG * 4 / 2**20  # 64 MB: the plane as float32
    assert stats["chunked_mb"] < float_image_mb
    assert stats["small_mb"] + stats["chunked_mb"] < stats["whole_mb"] / 4
    assert stats["max_diff"] <= 1  # chunked == in memory (rounding of the flux sums aside)
    assert stats["changed"] > 0.5
    assert stats["flux_rel"] < 1e-4
    out = open_ome_zarr(dst)
    assert [out.level(i).shape for i in range(4)] == [(BIG >> i, BIG >> i) for i in range(4)]
    assert out.attrs == open_ome_zarr(src).attrs


def test_multichannel_zarr_matches_in_memory_prediction(mosaic, tmp_path):
    data = np.stack([mosaic[:700, :900], mosaic[700:1400, :900]])
    src = tmp_path / "cells.ome.zarr"
    write_ome_zarr(src, data, "CYX", (1, 256, 256), levels=2, zarr_format=3,
                   names=["w1", "actin"])
    refocuser = Refocuser(near_identity_net(), device="cpu", channels=("w1",), mode="eager")
    refocuser._halo = 2
    seen: list[tuple[int, int]] = []
    out = refocus_ome_zarr(refocuser, src, tmp_path / "out" / src.name, tile=320, overlap=24,
                           progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1]  # chunk progress reached its total
    got = open_ome_zarr(out)
    result = got.level(0)[:]
    expected = refocuser.predict(data, axes="CYX", tile=4096, channel_names=["w1", "actin"])
    assert np.abs(result.astype(np.int32) - expected).max() <= 1
    np.testing.assert_array_equal(result[1], data[1])  # actin copied untouched
    np.testing.assert_array_equal(got.level(1)[:], result[:, ::2, ::2])
    assert got.zarr_format == 3 and got.channel_names == ("w1", "actin")


def test_existing_zarr_output_is_kept_without_overwrite(mosaic, tmp_path):
    src = tmp_path / "a.zarr"
    write_ome_zarr(src, mosaic[:256, :256], "YX", (128, 128), levels=1)
    dst = tmp_path / "out" / "a.zarr"
    dst.mkdir(parents=True)
    (dst / "mine").write_text("keep")
    refocuser = Refocuser(near_identity_net(), device="cpu", mode="eager")
    from refocus.errors import RefocusError

    with pytest.raises(RefocusError, match="exists already"):
        refocus_ome_zarr(refocuser, src, dst, tile=256, overlap=0)
    assert (dst / "mine").read_text() == "keep"


def test_plate_and_zarr_on_a_distributed_cluster(tiny_model_path, z00_files, tmp_path):
    """One task per file, and chunk tasks for an OME-Zarr, on a separate worker process
    that loads the model file itself (the refocuser travels as its path)."""
    distributed = pytest.importorskip("distributed")
    plate = tmp_path / "plate"
    plate.mkdir()
    for p in z00_files[:2]:
        tifffile.imwrite(plate / p.name, read_plane(p)[:96, :128])
    slide = read_plane(z00_files[3])[:128, :192]
    write_ome_zarr(tmp_path / "slide.zarr", slide, "YX", (64, 64), levels=2)
    jobs = plan_jobs(expand_inputs([plate, tmp_path / "slide.zarr"]), tmp_path / "out")
    refocuser = Refocuser.from_file(tiny_model_path, device="cpu", mode="eager")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=None) as cluster:
        outcomes = run_jobs(refocuser, jobs, tile=128, overlap=32,
                            scheduler=cluster.scheduler_address)
    assert [o.error for o in outcomes] == [None] * 3
    for job in jobs[:2]:  # the worker's result is this process's, to float rounding
        here = refocuser.predict(read_image(job.src).data, tile=128, overlap=32)
        assert np.abs(read_image(job.dst).data.astype(np.int32) - here).max() <= 1
    out = open_ome_zarr(jobs[2].dst)
    assert out.level(0).shape == slide.shape and out.level(1).shape == (64, 96)
    local = refocus_ome_zarr(refocuser, tmp_path / "slide.zarr", tmp_path / "here.zarr",
                             tile=128, overlap=32)
    assert np.abs(out.level(0)[:].astype(np.int32) - open_ome_zarr(local).level(0)[:]).max() <= 1

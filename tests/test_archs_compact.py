"""The compact CPU architecture ("nafnet") and the CARE baseline ("care"): shapes for any
size, the compute and size budgets of issue 13, identity at initialisation, registration."""

from __future__ import annotations

import pytest
import torch

from refocus.archs import ARCHITECTURES, build_network, get_architecture, param_groups
from refocus.archs.care_unet import build_care
from refocus.archs.compact import CompactUNet, LocalChannelAttention, build_compact
from refocus.errors import RefocusError
from refocus.inference.cost import macs_per_pixel

MAX_KMAC_PER_PX = 120
MAX_PARAMS = 8_000_000


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def compact() -> CompactUNet:
    torch.manual_seed(0)
    return build_compact().eval()


def test_registered_and_built_from_a_model_file_entry() -> None:
    assert {"nafnet", "care"} <= set(ARCHITECTURES.names())
    assert isinstance(build_network({"arch": "nafnet"}), CompactUNet)
    care = build_network({"arch": "care", "kernel_size": 5})
    assert care.down[0][0].kernel_size == (5, 5)
    net = build_network({"arch": "nafnet", "width": 8, "encoder_blocks": [1, 1],
                         "middle_blocks": 1, "decoder_blocks": [0, 1]})
    assert net.multiple == 4 and net.intro.out_channels == 8
    with pytest.raises(RefocusError, match="nafnet"):
        build_network({"arch": "nafnet", "depth": 3})
    assert get_architecture("care").load_pretrained is None


@pytest.mark.parametrize("shape", [(1, 1, 37, 53), (2, 1, 64, 65), (1, 1, 5, 7), (1, 1, 17, 16)])
@pytest.mark.parametrize("arch", ["nafnet", "care"])
def test_any_size_in_same_size_out(arch: str, shape: tuple[int, ...]) -> None:
    net = build_network({"arch": arch}).eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == shape and torch.isfinite(out).all()


def test_refuses_other_than_one_channel(compact: CompactUNet) -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        compact(torch.zeros(1, 3, 32, 32))


def test_compute_and_parameter_budget(compact: CompactUNet) -> None:
    kmac = macs_per_pixel(compact) / 1e3
    assert 20 < kmac <= MAX_KMAC_PER_PX
    assert n_params(compact) <= MAX_PARAMS
    # the ResNet-34 U-Net of the paper costs ~472 kMAC/px: at least 4x that
    assert kmac * 4 < 472


def test_care_is_csbdeeps_network() -> None:
    care = build_care()
    # 3x3 convolutions: 1-32-32 | 32-64-64 | 64-128-64 | 128-64-32 | 64-32-32 | 1x1 head
    convs = [(1, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 64), (128, 64), (64, 32),
             (64, 32), (32, 32)]
    def expected(k: int) -> int:
        return sum(k * k * i * o + o for i, o in convs) + 32 + 1

    assert n_params(care) == expected(3) == 332_641
    assert macs_per_pixel(care) == pytest.approx(83_296, rel=0.01)
    assert n_params(build_care(kernel_size=5)) == expected(5)  # CSBDeep's own 2-D default


def test_care_residual_adds_the_input() -> None:
    torch.manual_seed(1)
    plain = build_care(residual=False).eval()
    residual = build_care(residual=True).eval()
    residual.load_state_dict(plain.state_dict())
    x = torch.rand(1, 1, 40, 44)
    with torch.no_grad():
        torch.testing.assert_close(residual(x), plain(x) + x)


def test_compact_starts_as_the_identity(compact: CompactUNet) -> None:
    x = torch.rand(2, 1, 45, 61) * 3 - 0.5
    with torch.no_grad():
        assert torch.equal(compact(x), x)


def test_guide_channels_start_silent_and_are_refused_when_missing() -> None:
    """With a guide channel (e.g. a deconvolved copy) the output is still the image plus a
    correction: the image itself at the start, the guide only entering through training."""
    torch.manual_seed(4)
    net = CompactUNet(8, (1, 1), 1, (1, 1), 7, in_channels=2).eval()
    image, guide = torch.rand(1, 1, 36, 40), torch.rand(1, 1, 36, 40)
    with torch.no_grad():
        assert torch.equal(net(torch.cat([image, guide], 1)), image)
        torch.nn.init.normal_(net.ending.weight, std=0.1)
        a = net(torch.cat([image, guide], 1))
        b = net(torch.cat([image, 2 * guide], 1))
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        net(image)


def test_identity_start_still_trains_every_parameter() -> None:
    """Zero-initialised output and branch scales must not freeze the rest: after two steps
    every parameter gets a gradient."""
    torch.manual_seed(2)
    net = build_compact(width=8, encoder_blocks=(1, 1), middle_blocks=1, decoder_blocks=(1, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x = torch.rand(4, 1, 32, 32)
    y = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    for _ in range(3):
        opt.zero_grad()
        loss = (net(x) - y).abs().mean()
        loss.backward()
        opt.step()
    silent = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not silent
    assert len(param_groups(net)) == 1


def test_state_dict_round_trip_gives_the_same_network() -> None:
    torch.manual_seed(3)
    a = build_compact(width=8, encoder_blocks=(1, 1), middle_blocks=1, decoder_blocks=(1, 1))
    for p in a.parameters():
        torch.nn.init.normal_(p, std=0.1)
    b = build_compact(width=8, encoder_blocks=(1, 1), middle_blocks=1, decoder_blocks=(1, 1))
    b.load_state_dict(a.state_dict())  # strict: the attention's box is not saved
    x = torch.rand(1, 1, 30, 34)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_local_attention_averages_a_box_and_only_what_exists() -> None:
    att = LocalChannelAttention(1, 3)
    with torch.no_grad():
        att.proj.weight.fill_(1.0)
        att.proj.bias.zero_()
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    with torch.no_grad():
        out = att(x)
    # centre (1, 1): mean of rows 0-2, cols 0-2; corner (0, 0): mean of the 2x2 that exists
    assert out[0, 0, 1, 1] == pytest.approx(5.0 * x[0, 0, 1, 1].item())
    assert out[0, 0, 0, 0] == pytest.approx(0.0)
    assert out[0, 0, 0, 3] == pytest.approx(3.0 * (2 + 3 + 6 + 7) / 4)
    with pytest.raises(ValueError, match="odd"):
        LocalChannelAttention(4, 4)


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per scale"):
        build_compact(encoder_blocks=(1, 1), decoder_blocks=(1,))
    with pytest.raises(ValueError, match="positive"):
        build_compact(width=0)
    with pytest.raises(ValueError, match="kernel odd"):
        build_care(kernel_size=4)

"""PCRL's input corruptions: where each one acts, what it keeps, its probabilities and its determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from medssl.pretrain import PCRL
from medssl.pretrain.pcrl_corruptions import (
    PCRLCorruptions,
    box_mask,
    corrupt,
    gaussian_blur,
    in_paint,
    local_pixel_shuffle,
    matched_noise,
    nonlinear_intensity,
    out_paint,
    random_blur,
    shuffle_windows,
)
from tests.pretrain.conftest import SMALL

OFF = PCRLCorruptions(blur=0.0, shuffle=0.0, nonlinear=0.0, paint=0.0)


def _distinct(batch: int, dims: int, size: int = 20, channels: int = 1) -> Tensor:
    """Images whose voxels all hold different values (so a value tells where it came from)."""
    n = size**dims
    x = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(i)).float() for i in range(batch)])
    x = x.view(batch, 1, *[size] * dims)
    return torch.cat([x * (c + 1) for c in range(channels)], 1)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dims", [2, 3])
def test_shuffle_keeps_each_windows_values_changes_only_inside_and_moves_channels_together(dims: int) -> None:
    x = _distinct(2, dims, size=12, channels=2)
    # Two disjoint windows per image, the second image's elsewhere.
    starts = torch.tensor([[[0] * dims, [6] * dims], [[2] * dims, [5, 1, 7][:dims]]])
    sizes = torch.tensor([[[4] * dims, [3, 5, 2][:dims]], [[3] * dims, [4, 4, 3][:dims]]])
    out = shuffle_windows(x, starts, sizes, _g())
    inside = box_mask(x.shape[2:], starts, sizes)
    for b in range(2):
        assert torch.equal(out[b][:, ~inside[b]], x[b][:, ~inside[b]])
        for w in range(2):
            one = box_mask(x.shape[2:], starts[b : b + 1, w : w + 1], sizes[b : b + 1, w : w + 1])[0]
            assert torch.equal(out[b, 0][one].sort().values, x[b, 0][one].sort().values)
            assert not torch.equal(out[b, 0][one], x[b, 0][one])  # a 27+ voxel window is not left as it was
    torch.testing.assert_close(out[:, 1], 2 * out[:, 0])  # one permutation for every channel


def test_where_windows_overlap_the_later_one_wins_with_the_original_values() -> None:
    x = _distinct(1, 2, size=10)
    starts, sizes = torch.tensor([[[0, 0], [2, 2]]]), torch.tensor([[[4, 4], [4, 4]]])
    out = shuffle_windows(x, starts, sizes, _g(1))[0, 0]
    later = box_mask((10, 10), starts[:, 1:], sizes[:, 1:])[0]
    assert torch.equal(out[later].sort().values, x[0, 0][later].sort().values)
    earlier_only = box_mask((10, 10), starts[:, :1], sizes[:, :1])[0] & ~later
    assert torch.isin(out[earlier_only], x[0, 0, :4, :4]).all()


@pytest.mark.parametrize(("dims", "size", "edge"), [(2, 40, 4), (3, 20, 2)])
def test_local_shuffle_moves_values_only_within_small_windows(dims: int, size: int, edge: int) -> None:
    x = torch.arange(float(size**dims)).view(1, 1, *[size] * dims).repeat(2, 1, *[1] * dims)
    out = local_pixel_shuffle(x, _g())
    assert (out != x).float().mean() > 0.3  # many windows, about twice over every voxel in the code's density
    for b in range(2):
        where = torch.stack(torch.unravel_index(torch.arange(size**dims), (size,) * dims), 1)
        source = where[out[b, 0].flatten().long()]  # x holds a voxel's flat index: the value says where it was
        assert ((source - where).abs() < edge).all()  # window edges up to max(2, size // 10)


@pytest.mark.parametrize("dims", [2, 3])
def test_in_painting_changes_only_inside_its_boxes(dims: int) -> None:
    x = torch.randn(32, 2, *[18] * dims, generator=_g(5))
    out, mask = in_paint(x, _g())
    inside = mask.unsqueeze(1).expand_as(x)
    assert torch.equal(out[~inside], x[~inside])
    assert (out[inside] != x[inside]).all()
    share = mask.flatten(1).float().mean(1)
    assert (share > 0).float().mean() > 0.8 and (share <= 5 * (6 / 18) ** dims).all()  # up to 5 boxes of 3-6


@pytest.mark.parametrize("dims", [2, 3])
def test_out_painting_keeps_only_inside_its_boxes(dims: int) -> None:
    x = torch.randn(32, 1, *[21] * dims, generator=_g(6))
    out, mask = out_paint(x, _g())
    kept = mask.unsqueeze(1)
    assert torch.equal(out[kept], x[kept])
    assert (out[~kept] != x[~kept]).all()
    share = mask.flatten(1).float().mean(1)
    assert (share >= (9 / 21) ** dims - 1e-6).all()  # the first box, edges 9-12 of 21, is always kept
    assert (share < 1).all()


def test_box_mask_matches_a_loop() -> None:
    starts = torch.tensor([[[1, 2], [5, 0]], [[0, 0], [3, 3]]])
    sizes = torch.tensor([[[2, 3], [1, 4]], [[1, 1], [2, 2]]])
    active = torch.tensor([[True, True], [False, True]])
    want = torch.zeros(2, 7, 6, dtype=torch.bool)
    for b in range(2):
        for k in range(2):
            if active[b, k]:
                (r, c), (h, w) = starts[b, k].tolist(), sizes[b, k].tolist()
                want[b, r : r + h, c : c + w] = True
    assert torch.equal(box_mask((7, 6), starts, sizes, active), want)


def test_noise_has_each_images_mean_and_std() -> None:
    x = torch.stack([torch.randn(1, 64, 64, generator=_g(1)) * 3 + 5, torch.rand(1, 64, 64, generator=_g(2))])
    noise = matched_noise(x, _g())
    for image, fill in zip(x, noise, strict=True):
        assert float(fill.mean()) == pytest.approx(float(image.mean()), abs=0.05 * float(image.std()))
        assert float(fill.std()) == pytest.approx(float(image.std()), rel=0.05)
        half_width = math.sqrt(3) * float(image.std(correction=0))
        assert float((fill - image.mean()).abs().max()) <= half_width + 1e-5  # uniform, like the code's U(0, 1)


def _high_frequency_energy(x: Tensor) -> Tensor:
    spectrum = torch.fft.fftn(x, dim=tuple(range(2, x.ndim))).abs() ** 2
    freqs = torch.meshgrid(*[torch.fft.fftfreq(s).abs() for s in x.shape[2:]], indexing="ij")
    high = torch.stack(freqs).amax(0) > 0.25
    return spectrum[..., high].flatten(1).sum(1)


@pytest.mark.parametrize("dims", [2, 3])
def test_blur_reduces_high_frequency_energy_more_for_a_wider_kernel(dims: int) -> None:
    x = torch.randn(3, 1, *[16] * dims, generator=_g())
    out = gaussian_blur(x, torch.tensor([0.5, 1.0, 2.0]))
    energy, before = _high_frequency_energy(out), _high_frequency_energy(x)
    assert (energy < 0.5 * before).all() and energy[0] > energy[1] > energy[2]
    flat = torch.full((1, 1, *[9] * dims), 3.0)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([1.5])), flat)  # a kernel that sums to one
    assert not torch.equal(random_blur(x, (0.1, 2.0), _g()), x)


def test_nonlinear_curve_is_monotone_per_image_and_keeps_the_range() -> None:
    x = torch.randn(16, 1, 10, 10, generator=_g())
    out = nonlinear_intensity(x, _g())
    directions = []
    for image, curved in zip(x.flatten(1), out.flatten(1), strict=True):
        order = image.argsort()
        steps = curved[order].diff()
        assert (steps >= -1e-5).all() or (steps <= 1e-5).all()
        directions.append(bool(steps.sum() > 0))
        # The curve runs from (0, 0) to (1, 1) (or, decreasing, to (1, 0)): the image's range maps onto itself.
        torch.testing.assert_close(torch.stack((curved.min(), curved.max())), torch.stack((image.min(), image.max())))
    assert any(directions) and not all(directions)  # increasing and decreasing curves both drawn


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("step", ["blur", "shuffle", "nonlinear", "paint"])
def test_probability_zero_leaves_images_alone_and_one_changes_every_image(dims: int, step: str) -> None:
    x = torch.randn(8, 1, *[20] * dims, generator=_g(3))
    assert torch.equal(corrupt(x, OFF, _g()), x)
    # In-painting draws no box 5 % of the time (the code's loop): with p 1 only out-painting always changes.
    out = corrupt(x, PCRLCorruptions(**{**vars(OFF), step: 1.0, "inpaint": 0.0}), _g())
    if step == "blur":  # sigma 0.1 (the range's low end) leaves an image as it was up to rounding
        assert (_high_frequency_energy(out) < 0.9 * _high_frequency_energy(x)).float().mean() >= 0.75
    else:
        assert (out != x).flatten(1).any(1).all()


def test_paint_kind_follows_the_inpaint_probability() -> None:
    x = torch.randn(16, 1, 24, 24, generator=_g(4))
    inpainted = corrupt(x, PCRLCorruptions(**{**vars(OFF), "paint": 1.0, "inpaint": 1.0}), _g())
    outpainted = corrupt(x, PCRLCorruptions(**{**vars(OFF), "paint": 1.0, "inpaint": 0.0}), _g())
    border = torch.ones(24, 24, dtype=torch.bool)
    border[3:-3, 3:-3] = False  # boxes keep 3 pixels from the border: in-painting never reaches it, out-painting
    assert torch.equal(inpainted[..., border], x[..., border])  # never keeps it
    assert (outpainted[..., border] != x[..., border]).all()
    assert ((inpainted != x).flatten(1).float().mean(1) <= 5 / 9).all()  # up to 5 boxes of a third


@pytest.mark.parametrize("dims", [2, 3])
def test_the_same_generator_state_gives_the_same_corruption(dims: int) -> None:
    x = torch.randn(6, 1, *[20] * dims, generator=_g(7))
    probs = PCRLCorruptions(blur=0.5, shuffle=0.7, nonlinear=0.5, paint=0.9, inpaint=0.5)
    a, b, c = corrupt(x, probs, _g(11)), corrupt(x, probs, _g(11)), corrupt(x, probs, _g(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_probabilities_fail_at_construction_naming_the_step() -> None:
    with pytest.raises(ValueError, match="shuffle probability"):
        PCRLCorruptions(shuffle=1.5)
    with pytest.raises(ValueError, match="inpaint probability"):
        PCRL(2, 1, SMALL, inpaint_prob=-0.1)


def test_pcrl_options_set_the_chain_and_its_input() -> None:
    method = PCRL(2, 1, SMALL, blur_prob=0.0, shuffle_prob=1.0, nonlinear_prob=0.3, paint_prob=0.0)
    assert method.corruptions == PCRLCorruptions(blur=0.0, shuffle=1.0, nonlinear=0.3, paint=0.0, inpaint=0.2)
    assert PCRL(2, 1, SMALL).corruptions == PCRLCorruptions()  # the code's defaults
    x = torch.randn(2, 1, 16, 16, generator=_g())
    off = PCRL(2, 1, SMALL, blur_prob=0.0, shuffle_prob=0.0, paint_prob=0.0)
    assert torch.equal(off.corrupt(x, _g()), x)
    torch.testing.assert_close(method.corrupt(x, _g(2)), corrupt(x, method.corruptions, _g(2)))

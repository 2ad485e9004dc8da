import math

import pytest
import torch
import torch.nn.functional as F

from medssl.data.views import ViewGenerator, ViewRecord, overlap_box, overlap_fraction

OFF = (0.0, 0.0, 0.1)  # an intensity op that never fires
NO_INTENSITY = {"noise": OFF, "blur": (0.0, 0.5, 1.0), "contrast": (0.0, 1.0, 1.0), "gamma": (0.0, 1.0, 1.0)}
ALL_ON = {"noise": (1.0, 0.01, 0.1), "blur": (1.0, 0.5, 1.0), "contrast": (1.0, 0.75, 1.25), "gamma": (1.0, 0.7, 1.5)}
LINEAR = {2: "bilinear", 3: "trilinear"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _seed(s=0):
    return torch.Generator().manual_seed(s)


def _blob(shape, centre, sigma):
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
    return torch.exp(-0.5 * r2 / sigma**2)


def _centroid(img):
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in img.shape], indexing="ij")
    w = img.double().clamp(min=0)
    return torch.stack([(g * w).sum() / w.sum() for g in grids])


def _smooth(shape):
    """A smooth pattern that fades to zero at the borders, so that zero padding adds no edge."""
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij")
    phase = sum(g * (0.21 + 0.07 * a) for a, g in enumerate(grids))
    window = math.prod(torch.sin(math.pi * (g + 0.5) / n) ** 2 for g, n in zip(grids, shape, strict=True))
    return (torch.sin(phase) + 0.5 * torch.cos(grids[0] * 0.17 - grids[-1] * 0.13)) * window


def _sample_box(t, lo, hi, size):
    """Sample ``t (C, *spatial)`` at the centres of a ``size``-per-axis grid over the box ``[lo, hi)``."""
    axes = []
    for a, n in enumerate(t.shape[1:]):
        e = lo[a] + (torch.arange(size, dtype=torch.float64) + 0.5) * (hi[a] - lo[a]) / size
        axes.append(2 * e / n - 1)
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1).float()
    return F.grid_sample(t[None], grid[None], mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("dims", [2, 3])
def test_full_crop_orientation_equals_flip_then_rot90(dims):
    x = torch.randn(6, 2, *([6] * dims), generator=_seed(1))
    gen = ViewGenerator(dims, 6, scale=(1.0, 1.0), flip_p=0.5, rot90_p=1.0, rot90_plane=(dims - 1, 0), **NO_INTENSITY)
    views, recs = gen(x, _seed(3))
    assert {r.rot90_k for r in recs} - {0} and any(any(r.flips) for r in recs)
    for i, rec in enumerate(recs):
        dims_flipped = [1 + a for a, f in enumerate(rec.flips) if f]
        expected = torch.rot90(x[i].flip(dims_flipped), rec.rot90_k, dims=(dims, 1))
        torch.testing.assert_close(views[i], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(rec.to_crop_frame(views[i]), x[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(rec.from_crop_frame(x[i]), views[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
def test_half_size_view_is_average_pooling(dims):
    # align_corners=False: view voxel j samples input point 2j + 0.5, the mean of voxels 2j and 2j + 1.
    x = torch.randn(2, 1, *([8] * dims), generator=_seed(1))
    views, _ = ViewGenerator(dims, 4, scale=(1.0, 1.0), flip_p=0.0, **NO_INTENSITY)(x)
    torch.testing.assert_close(views, F.avg_pool2d(x, 2) if dims == 2 else F.avg_pool3d(x, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(("out", "padding"), [(6, "zeros"), (14, "border")])
def test_no_ops_and_full_crop_give_the_resized_input(dims, out, padding):
    x = torch.randn(2, 3, *([10] * dims), generator=_seed(1))
    gen = ViewGenerator(dims, out, scale=(1.0, 1.0), flip_p=0.0, padding_mode=padding, **NO_INTENSITY)
    views, recs = gen(x, _seed())
    resized = F.interpolate(x, size=[out] * dims, mode=LINEAR[dims], align_corners=False)
    torch.testing.assert_close(views, resized, atol=1e-5, rtol=0)
    assert all(r.intensity == {} and r.crop_start == (0.0,) * dims for r in recs)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("scale", [(0.6, 0.9), (1.1, 1.4)])
def test_blob_lands_where_input_to_view_says(dims, scale):
    shape, out, sigma = (40, 36, 32)[:dims], (28, 28, 24)[:dims], 1.6
    rng = torch.Generator().manual_seed(1)
    centres = [[8 + float(torch.rand(1, generator=rng)) * (n - 16) for n in shape] for _ in range(12)]
    x = torch.stack([_blob(shape, c, sigma)[None] for c in centres]).float()
    gen = ViewGenerator(dims, out, scale=scale, flip_p=0.5, rot90_p=0.75, **NO_INTENSITY)
    views, recs = gen(x, _seed(2))
    checked = 0
    for view, rec, centre in zip(views, recs, centres, strict=True):
        point = torch.tensor(centre, dtype=torch.float64)
        expected = rec.input_to_view(point)
        torch.testing.assert_close(rec.view_to_input(expected), point)
        margin = 3 * sigma * min(o / z for o, z in zip(rec.crop_shape, rec.crop_size, strict=True))
        if all(margin <= e <= n - 1 - margin for e, n in zip(expected.tolist(), out, strict=True)):
            assert (_centroid(view[0]) - expected).abs().max() < 0.1  # stricter than half a voxel: errors are ~0.03
            checked += 1
    assert checked >= 4  # the others are too close to the view border for a clean centroid


@pytest.mark.parametrize("dims", [2, 3])
def test_point_maps_are_exact_inverses(dims):
    x = torch.zeros(4, 1, *([12] * dims))
    _, recs = ViewGenerator(dims, (8, 10, 9)[:dims], scale=(0.5, 1.3), rot90_p=0.75, **NO_INTENSITY)(x, _seed())
    pts = torch.rand(20, dims, dtype=torch.float64, generator=_seed(1)) * 12
    for rec in recs:
        torch.testing.assert_close(rec.view_to_input(rec.input_to_view(pts)), pts)
        a = rec.affine()
        torch.testing.assert_close(rec.view_to_input(pts), pts @ a[:dims, :dims].T + a[:dims, dims])


@pytest.mark.parametrize("dims", [2, 3])
def test_box_in_view_matches_point_maps_and_crop_box(dims):
    x = torch.zeros(5, 1, *([16] * dims))
    gen = ViewGenerator(dims, 12, scale=(0.5, 1.4), rot90_p=0.75, **NO_INTENSITY)
    _, recs = gen(x, _seed(4))
    lo, hi = torch.tensor([2.0, 3.5, 1.0][:dims]), torch.tensor([9.0, 14.0, 7.25][:dims])
    for rec in recs:
        v_lo, v_hi = rec.box_in_view(lo, hi)
        corners = rec.input_to_view(torch.stack([lo, hi]) - 0.5) + 0.5  # boxes are points + 0.5
        torch.testing.assert_close(v_lo, corners.amin(0))
        torch.testing.assert_close(v_hi, corners.amax(0))
        # The crop box itself fills the whole view, in either frame.
        for oriented in (True, False):
            c_lo, c_hi = rec.box_in_view(rec.crop_start, rec.crop_end, oriented=oriented)
            torch.testing.assert_close(c_lo, torch.zeros(dims, dtype=torch.float64))
            torch.testing.assert_close(c_hi, torch.tensor(rec.out_size, dtype=torch.float64))
        # Before flips and turn, a box maps by (box - crop_start) * resize factor (PGL's CSAlign).
        u_lo, _ = rec.box_in_view(lo, hi, oriented=False)
        factor = torch.tensor(rec.crop_shape) / torch.tensor(rec.crop_size)
        torch.testing.assert_close(u_lo, ((lo - torch.tensor(rec.crop_start)) * factor).float())


@pytest.mark.parametrize("dims", [2, 3])
def test_overlap_regions_of_two_views_show_the_same_content(dims):
    shape = (32, 28, 24)[:dims]
    x = _smooth(shape)[None, None].repeat(3, 1, *([1] * dims))
    gen = ViewGenerator(dims, 24, scale=(0.6, 1.3), min_overlap=0.3, rot90_p=0.75, **NO_INTENSITY)
    v1, v2, recs1, recs2 = gen.pair(x, _seed(5))
    for i, (r1, r2) in enumerate(zip(recs1, recs2, strict=True)):
        box = overlap_box(r1, r2)
        assert box is not None
        reference = _sample_box(x[i], box[0], box[1], 6)
        for view, rec in ((v1[i], r1), (v2[i], r2)):
            lo, hi = rec.box_in_view(*box, oriented=False)
            patch = _sample_box(rec.to_crop_frame(view), lo.tolist(), hi.tolist(), 6)
            assert (patch - reference).abs().max() < 0.1


@pytest.mark.parametrize("dims", [2, 3])
def test_min_overlap_is_honoured(dims):
    x = torch.zeros(200, 1, *([8] * dims))
    kwargs = {"scale": (0.3, 0.7), "flip_p": 0.0, **NO_INTENSITY}
    _, _, r1, r2 = ViewGenerator(dims, 4, min_overlap=0.2, **kwargs).pair(x, _seed(6))
    assert min(overlap_fraction(a, b) for a, b in zip(r1, r2, strict=True)) >= 0.2
    _, _, r1, r2 = ViewGenerator(dims, 4, **kwargs).pair(x, _seed(6))
    assert sum(overlap_fraction(a, b) < 0.2 for a, b in zip(r1, r2, strict=True)) > 20  # the bound does bite


def test_overlap_box_ends_at_the_smaller_end():
    def rec(start, size):
        return ViewRecord(start, size, (10, 10), (4, 4), (False, False))

    assert overlap_box(rec((0.0, 2.0), (6.0, 4.0)), rec((3.0, 1.0), (6.0, 4.0))) == ((3.0, 2.0), (6.0, 5.0))
    assert overlap_fraction(rec((0.0, 0.0), (4.0, 4.0)), rec((2.0, 0.0), (4.0, 2.0))) == pytest.approx(4 / 16)
    assert overlap_box(rec((0.0, 0.0), (3.0, 3.0)), rec((3.0, 0.0), (3.0, 3.0))) is None


@pytest.mark.parametrize("dims", [2, 3])
def test_intensity_ops_are_recorded_in_order_within_their_ranges(dims):
    x = torch.randn(4, 1, *([10] * dims), generator=_seed(1))
    _, recs = ViewGenerator(dims, 8, **ALL_ON)(x, _seed())
    keys = {"noise": "variance", "blur": "sigma", "contrast": "factor", "gamma": "gamma"}
    for rec in recs:
        assert list(rec.intensity) == list(ALL_ON)
        for name, (_, low, high) in ALL_ON.items():
            assert low <= rec.intensity[name][keys[name]] <= high


@pytest.mark.parametrize("dims", [2, 3])
def test_intensity_ops_do_what_they_record(dims):
    x = torch.rand(2, 2, *([8] * dims), generator=_seed()) * 4 - 1
    base = {"scale": (1.0, 1.0), "flip_p": 0.0, **NO_INTENSITY}
    lo, hi = x.flatten(2).amin(-1), x.flatten(2).amax(-1)
    lo, hi = lo.reshape(2, 2, *([1] * dims)), hi.reshape(2, 2, *([1] * dims))
    v, _ = ViewGenerator(dims, 8, **{**base, "contrast": (1.0, 1.5, 1.5)})(x, _seed())
    torch.testing.assert_close(v, torch.minimum(torch.maximum(x * 1.5, lo), hi), atol=1e-5, rtol=0)
    v, _ = ViewGenerator(dims, 8, **{**base, "gamma": (1.0, 2.0, 2.0)})(x, _seed())
    torch.testing.assert_close(v, ((x - lo) / (hi - lo)) ** 2 * (hi - lo) + lo, atol=1e-5, rtol=0)
    delta = torch.zeros(1, 1, *([9] * dims))
    delta[(0, 0, *([4] * dims))] = 1.0
    v, recs = ViewGenerator(dims, 9, **{**base, "blur": (1.0, 0.5, 1.0)})(delta, _seed())
    sigma = recs[0].intensity["blur"]["sigma"]
    profile = torch.exp(-0.5 * (torch.arange(-4.0, 5.0, dtype=torch.float64) / sigma) ** 2)
    expected = math.prod(profile.reshape([-1 if a == i else 1 for a in range(dims)]) for i in range(dims))
    torch.testing.assert_close(v[0, 0].double(), expected / expected.sum(), atol=1e-4, rtol=0)
    zeros = torch.zeros(4, 1, *([16] * dims))
    v, _ = ViewGenerator(dims, 16, **{**base, "noise": (1.0, 0.04, 0.04)})(zeros, _seed())
    assert abs(float(v.std()) - 0.2) < 0.01


@pytest.mark.parametrize("dims", [2, 3])
def test_grey_views_never_change_channel_ratios(dims):
    g = torch.rand(3, 1, *([12] * dims), generator=_seed(1)) + 0.5
    gen = ViewGenerator(dims, 10, rot90_p=0.5, **ALL_ON)
    views, recs = gen(g.repeat(1, 3, *([1] * dims)), _seed(7))  # grey stored as three equal channels
    assert all("noise" in r.intensity and "channel_gain" not in r.intensity for r in recs)
    torch.testing.assert_close(views[:, 1:], views[:, :1].expand_as(views[:, 1:]), atol=1e-6, rtol=0)
    gen = ViewGenerator(dims, 10, rot90_p=0.5, **{**ALL_ON, "noise": OFF})
    views, _ = gen(torch.cat([g, 2.5 * g], dim=1), _seed(7))  # proportional channels (e.g. two gains)
    torch.testing.assert_close(views[:, 1], 2.5 * views[:, 0], atol=1e-5, rtol=1e-5)


def test_rgb_views_get_colour_changes():
    x = torch.rand(4, 1, 12, 12, generator=_seed(1)).repeat(1, 3, 1, 1) + 0.5
    gen = ViewGenerator(2, 10, rgb=True, channel_gain=(1.0, 0.8, 1.2), saturation=(1.0, 0.5, 0.5), **NO_INTENSITY)
    views, recs = gen(x, _seed())
    assert all(list(r.intensity) == ["channel_gain", "saturation"] for r in recs)
    assert all(len(r.intensity["channel_gain"]["gain"]) == 3 for r in recs)  # type: ignore[arg-type]
    assert (views[:, 0] - views[:, 1]).abs().max() > 0.01  # grey input, colour output
    with pytest.raises(ValueError, match="x"):
        gen(torch.rand(2, 1, 12, 12))


@pytest.mark.parametrize("dims", [2, 3])
def test_seeded_generator_is_reproducible(dims):
    x = torch.randn(3, 1, *([10] * dims), generator=_seed(1))
    gen = ViewGenerator(dims, 8, min_overlap=0.5, rot90_p=0.5, noise=(0.5, 0.0, 0.1), multi_crop=[(2, 4, (0.2, 0.4))])
    a_views, a_recs = gen.views(x, _seed(11))
    b_views, b_recs = gen.views(x, _seed(11))
    c_views, _ = gen.views(x, _seed(12))
    assert a_recs == b_recs
    assert all(torch.equal(a, b) for a, b in zip(a_views, b_views, strict=True))
    assert not torch.equal(a_views[0], c_views[0])
    assert [tuple(v.shape[2:]) for v in a_views] == [(8,) * dims] * 2 + [(4,) * dims] * 2
    assert all(r.crop_size[0] <= 0.4 * 10 + 1e-9 for r in a_recs[3])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"out_size": (8,)}, "out_size"),
        ({"out_size": 0}, "out_size"),
        ({"scale": (1.2, 0.8)}, "scale"),
        ({"scale": (0.0, 0.5)}, "scale"),
        ({"min_overlap": 0.0}, "min_overlap"),
        ({"min_overlap": 1.5}, "min_overlap"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"flip_p": (0.5, 0.5, 0.5)}, "flip_p"),
        ({"rot90_p": -0.1}, "rot90_p"),
        ({"rot90_plane": (0, 0)}, "rot90_plane"),
        ({"rot90_plane": (0, 2)}, "rot90_plane"),
        ({"noise": (0.1, -0.1, 0.1)}, "noise"),
        ({"blur": (0.2, 0.0, 1.0)}, "blur"),
        ({"contrast": (0.5, 1.25, 0.75)}, "contrast"),
        ({"gamma": (2.0, 0.7, 1.5)}, "gamma"),
        ({"channel_gain": (0.5, 0.0, 1.0)}, "channel_gain"),
        ({"saturation": (0.5, -1.0, 1.0)}, "saturation"),
        ({"multi_crop": [(0, 4, (0.2, 0.4))]}, "multi_crop"),
        ({"multi_crop": [(2, 4, (0.4, 0.2))]}, "multi_crop"),
        ({"padding_mode": "wrap"}, "padding_mode"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    args = {"spatial_dims": 2, "out_size": 8, **kwargs}
    with pytest.raises(ValueError, match=name):
        ViewGenerator(**args)


def test_bad_input_raises():
    gen = ViewGenerator(3, 8)
    with pytest.raises(ValueError, match="x"):
        gen(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="x"):
        gen(torch.zeros(2, 1, 8, 8, 8, dtype=torch.long))

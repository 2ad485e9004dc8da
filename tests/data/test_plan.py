import numpy as np
import pytest

from medssl.data.geometry import ImageMeta
from medssl.data.loading import LoadedCase
from medssl.data.plan import Plan, compute_fingerprint, make_plan
from medssl.errors import MedsslError


def _case(shape, spacing=None, label_values=(0, 1), channels=1, seed=0, physical=True):
    rng = np.random.default_rng(seed)
    meta = ImageMeta.default(shape, physical=physical)
    if spacing is not None:
        meta = ImageMeta(tuple(spacing), meta.origin, meta.direction, meta.shape, physical=True)
    label = rng.choice(label_values, size=shape).astype(np.int64)
    image = rng.normal(100, 20, size=(channels, *shape)).astype(np.float32)
    return LoadedCase("c", image, meta, label=label)


def test_fingerprint_uses_foreground_intensities():
    case = _case((8, 8, 8))
    case.image[0][case.label > 0] = 1000.0
    fp = compute_fingerprint([case], "CT")
    assert fp.intensity[0]["mean"] == pytest.approx(1000.0)
    assert fp.label_values == [0, 1]


def test_plan_3d_patch_divisible_and_capped():
    cases = [_case((36, 50, 35), spacing=(1, 1, 1), seed=i) for i in range(3)]
    plan = make_plan(compute_fingerprint(cases, "MRI"), labels={0: "bg", 1: "a"})
    div = 2 ** (len(plan.channels) - 1)
    assert plan.spatial_dims == 3 and plan.normalization == "zscore"
    assert all(p % div == 0 and p >= s for p, s in zip(plan.patch_size, (36, 50, 35), strict=True))
    assert plan.class_names == ["bg", "a"] and plan.out_channels == 2


def test_plan_anisotropic_target_spacing_and_2d_slicing():
    cases = [_case((64, 64, 12), spacing=(0.8, 0.8, 5.0), seed=i) for i in range(3)]
    plan = make_plan(compute_fingerprint(cases, "MRI"), spatial_dims=2)
    assert plan.target_spacing == [0.8, 0.8, 5.0]
    assert plan.slice_axis == 2 and len(plan.patch_size) == 2


def test_plan_ct_and_binary_255_labels():
    plan = make_plan(compute_fingerprint([_case((32, 32), label_values=(0, 255), physical=False)], "CT"))
    assert plan.normalization == "ct"
    assert plan.class_values == [0, 255] and plan.class_names == ["background", "foreground"]
    assert plan.target_spacing is None


def test_plan_rejects_background_only_and_bad_dims():
    fp = compute_fingerprint([_case((16, 16), label_values=(0,))], None)
    with pytest.raises(MedsslError, match="background only"):
        make_plan(fp)
    with pytest.raises(MedsslError, match="3D network needs 3D"):
        make_plan(compute_fingerprint([_case((16, 16))], None), spatial_dims=3)


def test_plan_round_trip(tmp_path):
    plan = make_plan(compute_fingerprint([_case((16, 16), channels=3)], None), structures=["a", "b"])
    plan.save(tmp_path / "plan.json")
    assert Plan.load(tmp_path / "plan.json") == plan
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(MedsslError, match="bad.json"):
        Plan.load(tmp_path / "bad.json")

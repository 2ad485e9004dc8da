import numpy as np
import pytest

from medssl.data.sampling import PatchDataset


@pytest.mark.parametrize("dims", [2, 3])
def test_patches_have_patch_shape_even_for_small_images(dims):
    shape = (10,) * dims
    img = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    tgt = np.zeros((1, *shape), np.uint8)
    ds = PatchDataset([img], [tgt], [16] * dims, samples=5, seed=0)
    x, y = ds[0]["image"], ds[0]["target"]
    assert x.shape == (2, *([16] * dims)) and y.shape == (1, *([16] * dims))
    assert len(ds) == 5


def test_foreground_oversampling():
    img = np.zeros((1, 64, 64), np.float32)
    tgt = np.zeros((1, 64, 64), np.uint8)
    tgt[0, 60:63, 60:63] = 1
    always = PatchDataset([img], [tgt], [16, 16], samples=20, foreground_fraction=1.0, intensity_probability=0)
    never = PatchDataset([img], [tgt], [16, 16], samples=20, foreground_fraction=0.0, intensity_probability=0)
    hits_always = sum(int(always[i]["target"].sum() > 0) for i in range(20))
    hits_never = sum(int(never[i]["target"].sum() > 0) for i in range(20))
    assert hits_always == 20 and hits_never < 10


def test_2d_patches_from_volumes():
    vol = np.random.default_rng(0).normal(size=(1, 12, 12, 7)).astype(np.float32)
    tgt = np.zeros((1, 12, 12, 7), np.uint8)
    tgt[0, :, :, 3] = 1
    ds = PatchDataset([vol], [tgt], [8, 8], samples=4, slice_axis=2, foreground_fraction=1.0)
    item = ds[0]
    x, y = item["image"], item["target"]
    assert x.shape == (1, 8, 8) and y.all()


def test_reseed_repeats_the_stream():
    img = np.random.default_rng(0).normal(size=(1, 32, 32)).astype(np.float32)
    ds = PatchDataset([img], [np.zeros((1, 32, 32), np.uint8)], [8, 8], samples=3, seed=4)
    first = ds[0]["image"]
    ds.reseed(4)
    assert (ds[0]["image"] == first).all()

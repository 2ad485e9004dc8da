"""Dict batches from the datasets (issue 15) and cases that carry several raters' targets.

``PatchDataset`` and ``CaseDataset`` yield dicts named as ``medssl.systems.Batch``. The patch stream must stay
bit-identical to the tuple-yielding dataset it replaces (recorded results and resumed runs depend on it): ``_Before``
below is a frozen copy of that dataset, and one configuration is also pinned by a hash of its output.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medssl.data.check import check_dataset_report
from medssl.data.geometry import ImageMeta
from medssl.data.layouts import DatasetIndex, discover
from medssl.data.loading import LoadedCase, load_checked_case, load_checked_cases
from medssl.data.plan import Plan
from medssl.data.preprocess import encode_raters, encode_target
from medssl.data.sampling import CaseDataset, PatchDataset
from medssl.errors import MedsslError
from medssl.systems import IMAGE, TARGET, as_batch

# ------------------------------------------------------------------------------- the patch stream of before


class _Before:
    """``medssl.data.sampling.PatchDataset`` as it was before dict batches (commit 689d71b), verbatim but for the
    base class, the inlined 20000 and the methods the stream does not use: it yielded ``(image, target)`` tuples.
    Do not edit: it is the reference of the stream."""

    def __init__(
        self,
        images: list[np.ndarray],
        targets: list[np.ndarray],
        patch_size: list[int],
        samples: int,
        *,
        foreground_fraction: float = 0.33,
        slice_axis: int | None = None,
        flip_axes: list[int] | None = None,
        intensity_probability: float = 0.3,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.targets = targets
        self.patch = list(patch_size)
        self.samples = samples
        self.fg_fraction = foreground_fraction
        self.slice_axis = slice_axis
        self.flip_axes = list(flip_axes or [])
        self.p_intensity = intensity_probability
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.fg = [self._foreground_coords(t) for t in targets]

    def _foreground_coords(self, target: np.ndarray) -> np.ndarray:
        coords = np.argwhere(target.any(axis=0))
        if len(coords) > 20000:
            coords = coords[self.rng.choice(len(coords), 20000, replace=False)]
        return coords

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng
        i = int(rng.integers(len(self.images)))
        image, target, fg = self.images[i], self.targets[i], self.fg[i]
        centre = fg[rng.integers(len(fg))] if len(fg) and rng.random() < self.fg_fraction else None
        if self.slice_axis is not None:
            ax = self.slice_axis + 1
            k = int(centre[self.slice_axis]) if centre is not None else int(rng.integers(image.shape[ax]))
            image, target = np.take(image, k, axis=ax), np.take(target, k, axis=ax)
            if centre is not None:
                centre = np.delete(centre, self.slice_axis)
        x, y = self._crop(image, target, centre, rng)
        for a in self.flip_axes:
            if rng.random() < 0.5:
                x, y = np.flip(x, a + 1), np.flip(y, a + 1)
        x = self._intensity(np.ascontiguousarray(x, dtype=np.float32), rng)
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))

    def _crop(
        self, image: np.ndarray, target: np.ndarray, centre: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        shape = np.asarray(image.shape[1:])
        patch = np.asarray(self.patch)
        if centre is None:
            start = np.array(
                [rng.integers(min(0, s - p), max(0, s - p) + 1) for s, p in zip(shape, patch, strict=True)]
            )
        else:
            start = centre - patch // 2 + rng.integers(-(patch // 4), patch // 4 + 1)
            start = np.clip(start, np.minimum(0, shape - patch), np.maximum(0, shape - patch))
        lo = np.maximum(start, 0)
        hi = np.minimum(start + patch, shape)
        region = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        pad = [(0, 0)] + [(int(a - s), int(s + p - b)) for a, b, s, p in zip(lo, hi, start, patch, strict=True)]
        x = np.pad(image[(slice(None), *region)], pad)
        y = np.pad(target[(slice(None), *region)], pad)
        return x, y

    def _intensity(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.p_intensity:
            x = x * rng.uniform(0.75, 1.25) + rng.uniform(-0.1, 0.1)
        if rng.random() < self.p_intensity / 2:
            x = x + rng.normal(0.0, rng.uniform(0.0, 0.1), size=x.shape).astype(np.float32)
        return x


def _cases(
    shapes: list[tuple[int, ...]], seed: int = 0, channels: int = 2
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random images and 3-class targets with a blob of foreground in each (some with many foreground voxels)."""
    rng = np.random.default_rng(seed)
    images = [rng.normal(size=(channels, *s)).astype(np.float32) for s in shapes]
    targets = []
    for s in shapes:
        t = np.zeros((1, *s), np.uint8)
        t[(0, *(slice(d // 4, d // 4 + max(1, d // 3)) for d in s))] = rng.integers(1, 3)
        targets.append(t)
    return images, targets


# name -> (case shapes, PatchDataset keywords): every branch of the stream (foreground or not, slicing, padding of
# images smaller than the patch, flips, intensity, the subsampling of over 20000 foreground voxels)
CONFIGS: dict[str, tuple[list[tuple[int, ...]], dict[str, Any]]] = {
    "2d": ([(40, 36), (20, 50), (12, 9)], {"patch_size": [16, 16], "flip_axes": [0, 1]}),
    "2d-foreground": ([(40, 36), (33, 30)], {"patch_size": [16, 8], "foreground_fraction": 0.9, "flip_axes": [1]}),
    "3d": ([(12, 14, 10), (9, 20, 8)], {"patch_size": [8, 8, 8], "flip_axes": [0, 1, 2]}),
    "2d-from-3d": ([(14, 12, 9), (10, 16, 7)], {"patch_size": [8, 8], "slice_axis": 2, "flip_axes": [0, 1]}),
    "2d-from-3d-foreground": (
        [(14, 12, 9)],
        {"patch_size": [8, 12], "slice_axis": 0, "foreground_fraction": 1.0, "flip_axes": [0]},
    ),
    "many-foreground-voxels": ([(180, 180)], {"patch_size": [32, 32], "foreground_fraction": 0.5}),
    "no-intensity": ([(30, 30)], {"patch_size": [16, 16], "intensity_probability": 0.0, "flip_axes": [0]}),
}


def _config(name: str) -> tuple[list[tuple[int, ...]], list[int], dict[str, Any]]:
    """Case shapes, patch size and the other keywords of a configuration."""
    shapes, kw = CONFIGS[name]
    return shapes, kw["patch_size"], {k: v for k, v in kw.items() if k != "patch_size"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_patch_stream_is_the_stream_of_before(name: str) -> None:
    shapes, patch, kw = _config(name)
    images, targets = _cases(shapes)
    if name == "many-foreground-voxels":
        targets[0][0, 10:170, 10:170] = 1  # 25600 voxels: 20000 are kept, chosen by the stream
    before = _Before(images, targets, patch, 40, seed=3, **kw)
    now = PatchDataset(images, targets, patch, 40, seed=3, **kw)
    for k in range(40):
        x, y = before[k]
        item = now[k]
        assert sorted(item) == [IMAGE, TARGET]
        assert torch.equal(item[IMAGE], x) and torch.equal(item[TARGET], y), f"item {k} differs"
        assert item[IMAGE].dtype == torch.float32 and item[TARGET].dtype == torch.uint8
    assert now.rng.bit_generator.state == before.rng.bit_generator.state  # resume saves this state


def _digest(items: list[dict[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for item in items:
        for key in sorted(item):
            h.update(key.encode())
            h.update(np.ascontiguousarray(item[key].numpy()).tobytes())
    return h.hexdigest()[:16]


def test_patch_stream_hash_recorded_before_dict_batches() -> None:
    """Integer draws only (no intensity change), so the hash does not depend on numpy's float distributions;
    recorded with the tuple-yielding dataset of before."""
    images, targets = _cases([(40, 36), (20, 50)], seed=1)
    ds = PatchDataset(
        images, targets, [16, 16], 30, foreground_fraction=0.5, flip_axes=[0, 1], intensity_probability=0, seed=7
    )
    assert _digest([ds[k] for k in range(30)]) == "ca691c1cdb94385d"


@pytest.mark.parametrize("name", ["2d", "3d", "2d-from-3d"])
def test_image_only_patches_are_the_crops_of_an_all_zero_target(name: str) -> None:
    """Pretraining: no target (no field), the stream of before with the all-zero dummy target it passed."""
    shapes, patch, kw = _config(name)
    images, _ = _cases(shapes)
    # what pretraining passed: an all-zero view per image
    dummy = [np.broadcast_to(np.zeros((1,) * x.ndim, np.uint8), (1, *x.shape[1:])) for x in images]
    before = _Before(images, dummy, patch, 30, foreground_fraction=0.0, intensity_probability=0.0, seed=5, **kw)
    now = PatchDataset(images, None, patch, 30, foreground_fraction=0.0, intensity_probability=0.0, seed=5, **kw)
    for k in range(30):
        item = now[k]
        assert list(item) == [IMAGE] and torch.equal(item[IMAGE], before[k][0]), f"item {k} differs"
    assert now.rng.bit_generator.state == before.rng.bit_generator.state


# --------------------------------------------------------------------------------------------- extra fields


@pytest.mark.parametrize("name", ["2d", "2d-foreground", "3d", "2d-from-3d", "2d-from-3d-foreground"])
def test_extra_fields_are_cut_sliced_and_flipped_like_the_target(name: str) -> None:
    """Raters derived from the target voxel by voxel, and a copy of the image: after any crop, slice, pad and flip
    each must still be that function of the target's (and the image's) patch."""
    shapes, patch, kw = _config(name)
    kw["intensity_probability"] = 0.0  # the image's copy stays equal to the image
    images, targets = _cases(shapes)
    rng = np.random.default_rng(9)
    for t in targets:  # a target that no flip or shift maps onto itself
        t[0] = np.where(rng.random(t.shape[1:]) < 0.3, rng.integers(0, 3, t.shape[1:]), t[0])
    raters = [np.concatenate([t, (3 - t) % 3, 2 * t]) for t in targets]  # 0 stays 0: padding
    extras = {"raters": raters, "copy": [x[:1].copy() for x in images]}
    plain = PatchDataset(images, targets, patch, 30, seed=2, **kw)
    now = PatchDataset(images, targets, patch, 30, seed=2, extras=extras, **kw)
    for k in range(30):
        item, ref = now[k], plain[k]
        assert sorted(item) == sorted([IMAGE, TARGET, "raters", "copy"])
        assert torch.equal(item[IMAGE], ref[IMAGE]) and torch.equal(item[TARGET], ref[TARGET])  # same stream
        y = item[TARGET]
        assert item["raters"].shape == (3, *patch)
        assert torch.equal(item["raters"], torch.cat([y, (3 - y) % 3, 2 * y]))
        assert torch.equal(item["copy"], item[IMAGE][:1])
    assert now.rng.bit_generator.state == plain.rng.bit_generator.state


def test_extra_fields_without_a_target() -> None:
    images, targets = _cases([(30, 20)])
    now = PatchDataset(images, None, [8, 8], 5, extras={"high_res": targets}, flip_axes=[0, 1], seed=1)
    item = now[0]
    assert sorted(item) == sorted([IMAGE, "high_res"]) and item["high_res"].shape == (1, 8, 8)


@pytest.mark.parametrize(
    ("targets", "extras", "match"),
    [
        ([np.zeros((1, 10, 12), np.uint8)] * 2, None, "2 target array"),
        ([np.zeros((1, 10, 11), np.uint8)], None, r"target 0 is \(10, 11\)"),
        (None, {"raters": [np.zeros((2, 12, 10), np.uint8)]}, r"raters 0 is \(12, 10\)"),
        (None, {"raters": []}, "0 raters array"),
        (None, {"target": [np.zeros((1, 10, 12), np.uint8)]}, "would replace the target"),
    ],
)
def test_fields_that_do_not_fit_the_images_are_refused(
    targets: list[np.ndarray] | None, extras: dict[str, list[np.ndarray]] | None, match: str
) -> None:
    images = [np.zeros((1, 10, 12), np.float32)]
    with pytest.raises(ValueError, match=match):
        PatchDataset(images, targets, [8, 8], 4, extras=extras)
    with pytest.raises(ValueError, match=match):
        CaseDataset(images, targets, extras=extras)


# ----------------------------------------------------------------------------------------------- whole cases


def test_case_dataset_yields_whole_cases_as_batches() -> None:
    images, targets = _cases([(10, 12), (7, 9)])
    raters = [np.concatenate([t, t]) for t in targets]
    ds = CaseDataset(images, targets, extras={"raters": raters})
    assert len(ds) == 2
    for i in range(2):
        item = ds[i]
        assert sorted(item) == sorted([IMAGE, TARGET, "raters"])
        assert np.array_equal(item[IMAGE].numpy(), images[i]) and np.array_equal(item[TARGET].numpy(), targets[i])
        assert np.array_equal(item["raters"].numpy(), raters[i])
    batch = as_batch(next(iter(DataLoader(ds, batch_size=1))))
    assert batch[IMAGE].shape == (1, 2, 10, 12) and batch[TARGET].shape == (1, 1, 10, 12)
    assert batch["raters"].shape == (1, 2, 10, 12)
    assert list(CaseDataset(images)[1]) == [IMAGE]


def test_patch_batches_reach_a_system_as_named_fields() -> None:
    images, targets = _cases([(20, 20)])
    loader = DataLoader(PatchDataset(images, targets, [8, 8], 4, seed=0), batch_size=2)
    batch = as_batch(next(iter(loader)))
    assert batch[IMAGE].shape == (2, 2, 8, 8) and batch[TARGET].shape == (2, 1, 8, 8)


# ---------------------------------------------------------------------------------------- several raters


def _png(path: Path, array: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array.astype(np.uint8))
    if palette:  # DRIVE's 2nd_manual: a palette GIF whose index is 0/1
        im = im.convert("P")
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    im.save(path)


def _vessels(seed: int, shift: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((20, 24), np.uint8)
    mask[:, rng.integers(4, 20) + shift] = 1
    mask[rng.integers(4, 16), :] = 1
    return mask


def _stare(root: Path) -> Path:
    """STARE-like: ``images/``, ``labels-ah/`` (the label), ``labels-vk/``; the raters disagree by one column."""
    for i in range(1, 4):
        _png(root / "images" / f"im{i:04d}.png", np.stack([60 + 120 * _vessels(i)] * 3, axis=-1))
        _png(root / "labels-ah" / f"im{i:04d}.png", _vessels(i) * 255)
        _png(root / "labels-vk" / f"im{i:04d}.png", _vessels(i, shift=1) * 255)
    return root


def _drive(root: Path) -> Path:
    """DRIVE-like: the training cases have one observer (0/255), the test cases a second one (palette 0/1)."""
    for part, ids in (("training", (21, 22)), ("test", (1, 2))):
        for i in ids:
            _png(root / part / "images" / f"{i:02d}_{part}.tif", np.stack([60 + 120 * _vessels(i)] * 3, axis=-1))
            _png(root / part / "1st_manual" / f"{i:02d}_manual1.png", _vessels(i) * 255)  # a GIF would read 0/1
            if part == "test":
                _png(root / part / "2nd_manual" / f"{i:02d}_manual2.gif", _vessels(i, shift=2), palette=True)
    return root


def _binary_plan(values: list[int]) -> Plan:
    return Plan(
        spatial_dims=2,
        data_dims=2,
        in_channels=3,
        task="labelmap",
        class_values=values,
        class_names=["background", "foreground"],
        target_spacing=None,
        normalization="rgb",
        intensity=[],
        patch_size=[16, 16],
        channels=[4, 8],
        batch_size=2,
    )


def test_every_observer_is_loaded_when_asked(tmp_path: Path) -> None:
    index = discover(_stare(tmp_path / "stare"))
    checked = load_checked_cases(index, index.cases, raters=True)
    assert not checked.bad and len(checked.loaded) == 3
    for i, case in enumerate(index.cases, start=1):
        loaded = checked.loaded[case.case_id]
        assert loaded.raters is not None and loaded.raters.shape == (2, 20, 24)
        assert np.array_equal(loaded.raters[0], loaded.label)
        assert np.array_equal(loaded.raters[0], _vessels(i) * 255) and np.array_equal(
            loaded.raters[1], _vessels(i, 1) * 255
        )
        one = load_checked_case(case, index, raters=True)
        assert one.raters is not None and np.array_equal(one.raters, loaded.raters)
    # off by default: today's runs neither read nor keep the other observers
    assert all(c.raters is None for c in load_checked_cases(index, index.cases).loaded.values())
    assert load_checked_case(index.cases[0], index).raters is None


def test_a_case_with_one_observer_has_no_raters(tmp_path: Path) -> None:
    index = discover(_drive(tmp_path / "drive"))
    loaded = load_checked_cases(index, index.cases, raters=True).loaded
    assert {k: v.raters is not None for k, v in loaded.items()} == {
        "01_test": True,
        "02_test": True,
        "21_training": False,
        "22_training": False,
    }
    assert set(np.unique(loaded["01_test"].raters[1])) == {0, 1}  # type: ignore[index]


def _broken_rater(tmp_path: Path, array: np.ndarray) -> tuple[DatasetIndex, str]:
    root = _stare(tmp_path / "stare")
    _png(root / "labels-vk" / "im0002.png", array)
    return discover(root), "labels-vk/im0002.png"


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((20, 23), np.uint8), "shape mismatch: image images/im0002.png is 20x24 but mask {file} is 20x23"),
        (np.arange(480).reshape(20, 24) % 200, "{file}: 200 distinct values, looks like a grey-level"),
    ],
    ids=["shape", "values"],
)
def test_every_observer_mask_is_checked_like_the_label(tmp_path: Path, array: np.ndarray, problem: str) -> None:
    index, file = _broken_rater(tmp_path, array)
    assert not load_checked_cases(index, index.cases).bad  # not read unless asked
    checked = load_checked_cases(index, index.cases, raters=True)
    assert list(checked.bad) == ["im0002"] and "im0002" not in checked.loaded
    assert any(line.startswith(problem.format(file=file)) for line in checked.bad["im0002"]), checked.bad
    with pytest.raises(MedsslError, match="labels-vk/im0002.png"):
        load_checked_case(index.cases[1], index, raters=True)
    # `medssl data check` reads every observer: it reports what a loader with raters=True would refuse
    report = check_dataset_report(index.root)
    assert any(line.startswith(problem.format(file=file)) for line in report.problems), report.problems


def test_a_rater_with_other_label_values_is_refused_with_the_dataset_rule(tmp_path: Path) -> None:
    """The observers' maps join the dataset-wide rule on label values like the label's (values of most masks)."""
    index, file = _broken_rater(tmp_path, _vessels(2) * 3 + (np.arange(480).reshape(20, 24) % 2))
    checked = load_checked_cases(index, index.cases, raters=True)
    assert list(checked.bad) == ["im0002"]
    assert checked.bad["im0002"][0].startswith(f"{file}: mask values")


# ------------------------------------------------------------------------------------------ encode_raters


def test_raters_are_encoded_like_the_target_whatever_binary_values_they_use(tmp_path: Path) -> None:
    index = discover(_drive(tmp_path / "drive"))
    case = load_checked_case(next(c for c in index.cases if c.case_id == "01_test"), index, raters=True)
    plan = _binary_plan([0, 255])
    raters = encode_raters(case, plan)
    assert raters.dtype == np.uint8 and raters.shape == (2, 20, 24)
    assert np.array_equal(raters[:1], encode_target(case, plan))
    assert np.array_equal(raters[0], _vessels(1)) and np.array_equal(raters[1], _vessels(1, shift=2))


def test_raters_of_a_label_map_plan_map_values_to_classes_and_resample() -> None:
    meta = ImageMeta((1.0, 2.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)), (6, 4), physical=True)
    raters = np.stack([np.full((6, 4), 7), np.tile([0, 3, 7, 3], (6, 1))]).astype(np.int64)
    case = LoadedCase("c", np.zeros((1, 6, 4), np.float32), meta, label=raters[0], raters=raters)
    plan = replace(_binary_plan([0, 3, 7]), class_names=["background", "a", "b"], target_spacing=[1.0, 1.0])
    out = encode_raters(case, plan)
    assert out.shape == (2, 6, 8) and out.dtype == np.uint8
    assert (out[0] == 2).all() and np.array_equal(out[1, 0], [0, 0, 1, 1, 2, 2, 1, 1])
    case.raters = raters.copy()
    case.raters[1, 0, 0] = 5
    with pytest.raises(MedsslError, match=r"label values \[5\] are not among the planned classes"):
        encode_raters(case, plan)


def test_encode_raters_refusals() -> None:
    meta = ImageMeta.default((4, 4))
    case = LoadedCase("c", np.zeros((1, 4, 4), np.float32), meta, label=np.zeros((4, 4), np.int64))
    with pytest.raises(MedsslError, match="case c has no raters' label maps"):
        encode_raters(case, _binary_plan([0, 1]))
    case.raters = np.zeros((2, 4, 4), np.int64)
    with pytest.raises(MedsslError, match="need a labelmap plan"):
        encode_raters(case, replace(_binary_plan([0, 1]), task="multilabel"))


def test_loaded_raters_reach_the_patches_with_their_target(tmp_path: Path) -> None:
    """Load, encode and sample: every rater's patch is cut from the same place as the target's."""
    index = discover(_stare(tmp_path / "stare"))
    plan = _binary_plan([0, 255])
    cases = list(load_checked_cases(index, index.cases, raters=True).loaded.values())
    targets = [encode_target(c, plan) for c in cases]
    raters = [encode_raters(c, plan) for c in cases]
    images = [c.image for c in cases]
    ds = PatchDataset(images, targets, [8, 8], 20, extras={"raters": raters}, foreground_fraction=0.5, flip_axes=[0, 1])
    for k in range(20):
        item = ds[k]
        assert item["raters"].shape == (2, 8, 8) and torch.equal(item["raters"][:1], item[TARGET])

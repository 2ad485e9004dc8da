"""``check_dataset``: every problem reported, each naming its file(s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from medssl.data.check import check_dataset, check_dataset_report, geometry_difference
from medssl.data.geometry import ImageMeta
from medssl.data.io import write_image


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _mask(values: tuple[int, ...], size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """A mask holding each of ``values`` in its own rows."""
    out = np.zeros(size, np.uint8)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _paired(root: Path, masks: dict[str, np.ndarray]) -> Path:
    rng = np.random.default_rng(0)
    for name, mask in masks.items():
        _png(root / "images" / f"{name}.png", rng.integers(0, 256, size=(8, 8)))
        _png(root / "masks" / f"{name}.png", mask)
    return root


def _nii(path: Path, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    meta = ImageMeta(spacing, (0.0, 0.0, 0.0), ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), array.shape)
    write_image(path, array, meta)


def _msd(root: Path, labels: dict[str, np.ndarray], declared: tuple[int, ...] = (0, 1, 2)) -> Path:
    (root / "dataset.json").parent.mkdir(parents=True, exist_ok=True)
    meta = {"modality": {"0": "MRI"}, "labels": {str(v): f"class{v}" for v in declared}}
    (root / "dataset.json").write_text(json.dumps(meta))
    for name, lab in labels.items():
        _nii(root / "imagesTr" / f"{name}.nii.gz", np.ones(lab.shape, np.float32))
        _nii(root / "labelsTr" / f"{name}.nii.gz", lab)
    return root


def test_clean_datasets_have_no_problem(tmp_path: Path) -> None:
    assert check_dataset(_paired(tmp_path / "p", {"a": _mask((0, 255)), "b": _mask((0,)), "c": _mask((0, 1))})) == []
    lab = np.zeros((4, 4, 3), np.int64)
    lab[1, 1, 1], lab[2, 2, 2] = 1, 2
    report = check_dataset_report(_msd(tmp_path / "m", {"c1": lab, "c2": lab}))
    assert report.ok and report.layout == "msd" and report.n_cases == 2


def test_mask_of_another_size(tmp_path: Path) -> None:
    root = _paired(tmp_path, {"a": _mask((0, 255)), "b": _mask((0, 255))})
    _png(root / "masks" / "b.png", _mask((0, 255), size=(8, 9)))
    problems = check_dataset(root)
    assert len(problems) == 1
    assert "shape mismatch" in problems[0] and "images/b.png" in problems[0] and "masks/b.png" in problems[0]


def test_nan_in_image(tmp_path: Path) -> None:
    lab = np.zeros((4, 4, 3), np.int64)
    root = _msd(tmp_path, {"c1": lab, "c2": lab})
    img = np.ones((4, 4, 3), np.float32)
    img[0, 0, 0], img[1, 1, 1] = np.nan, np.inf
    _nii(root / "imagesTr" / "c2.nii.gz", img)
    problems = check_dataset(root)
    assert len(problems) == 1 and "imagesTr/c2.nii.gz" in problems[0] and "2 NaN or infinite" in problems[0]


def test_label_values_out_of_range(tmp_path: Path) -> None:
    root = _paired(
        tmp_path,
        {"a": _mask((0, 1)), "b": _mask((0, 1)), "c": _mask((0, 1, 2)), "d": np.arange(64).reshape(8, 8)},
    )
    problems = check_dataset(root)
    assert len(problems) == 2
    assert any("masks/c.png" in p and "{2}" in p for p in problems)
    assert any("masks/d.png" in p and "grey-level" in p for p in problems)


def test_label_maps_with_a_common_value_set_are_fine(tmp_path: Path) -> None:
    root = _paired(tmp_path, {"a": _mask((0, 1, 2)), "b": _mask((0, 1, 2)), "c": _mask((0, 1)), "d": _mask((0, 255))})
    problems = check_dataset(root)
    assert len(problems) == 1 and "masks/d.png" in problems[0] and "{255}" in problems[0]


def test_msd_undeclared_and_negative_labels(tmp_path: Path) -> None:
    ok = np.zeros((4, 4, 3), np.int64)
    bad, neg = ok.copy(), ok.copy()
    bad[0, 0, 0] = 5
    neg[0, 0, 0] = -1
    problems = check_dataset(_msd(tmp_path, {"ok": ok, "bad": bad, "neg": neg}))
    assert len(problems) == 2
    assert any("labelsTr/bad.nii.gz" in p and "not declared" in p and "{5}" in p for p in problems)
    assert any("labelsTr/neg.nii.gz" in p and "negative" in p for p in problems)


def test_geometry_mismatch(tmp_path: Path) -> None:
    lab = np.zeros((4, 4, 3), np.int64)
    root = _msd(tmp_path, {"a": lab, "b": lab, "c": lab})
    _nii(root / "labelsTr" / "b.nii.gz", lab, spacing=(1.0, 1.0, 1.5))
    _nii(root / "labelsTr" / "c.nii.gz", lab, spacing=(1.0, 1.0, 1.00001))  # within tolerance
    problems = check_dataset(root)
    assert len(problems) == 1
    assert "geometry mismatch" in problems[0] and "labelsTr/b.nii.gz" in problems[0] and "spacing" in problems[0]
    a = ImageMeta.default((2, 2, 2), physical=True)
    assert geometry_difference(a, ImageMeta.default((2, 2, 2), physical=False)) == ""


def test_multilabel_problems(tmp_path: Path) -> None:
    for name in ("x1", "x2"):
        _png(tmp_path / "images" / f"{name}.png", _mask((10, 20)))
        _png(tmp_path / "masks" / "heart" / f"{name}.png", _mask((0, 255)))
    _png(tmp_path / "masks" / "lung" / "x1.png", _mask((0, 128, 255)))
    (tmp_path / "masks" / "clavicle").mkdir()
    problems = check_dataset(tmp_path)
    text = "\n".join(problems)
    assert "masks/lung/x1.png" in text and "not binary" in text
    assert "images/x2.png" in text and "masks/lung" in text  # structure mask missing
    assert "masks/clavicle" in text and "empty" in text


def test_every_problem_is_reported(tmp_path: Path) -> None:
    root = _paired(tmp_path, {n: _mask((0, 255)) for n in ("a", "b", "c", "d", "e")})
    _png(root / "masks" / "b.png", _mask((0, 255), size=(4, 4)))  # size
    (root / "masks" / "c.png").write_bytes(b"")  # empty file
    (root / "images" / "d.png").write_bytes((root / "images" / "d.png").read_bytes()[:60])  # truncated
    _png(root / "images" / "orphan.png", _mask((1,)))  # image without mask
    _png(root / "masks" / "lonely.png", _mask((0, 255)))  # mask without image
    (root / "images" / "scan.hdr").write_bytes(b"analyze")  # unsupported format
    (root / "images" / "nested").mkdir()  # empty folder
    _png(root / "images" / "e.png", np.stack([_mask((1,))] * 3, axis=-1))  # RGB among grey images
    problems = check_dataset(root)
    text = "\n".join(problems)
    for expected in (
        "masks/b.png",
        "c.png",
        "d.png",
        "images/orphan.png",
        "masks/lonely.png",
        "images/scan.hdr",
        "images/nested/",
        "images/e.png",
    ):
        assert expected in text, expected
    assert len(problems) == 8


def test_nnunet_channel_files_must_agree(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "labels": {"bg": 0}}))
    _nii(tmp_path / "imagesTr" / "p_0000.nii.gz", np.ones((4, 4, 3), np.float32))
    _nii(tmp_path / "imagesTr" / "p_0001.nii.gz", np.ones((4, 4, 2), np.float32))
    _nii(tmp_path / "labelsTr" / "p.nii.gz", np.zeros((4, 4, 3), np.int64))
    problems = check_dataset(tmp_path)
    assert len(problems) == 1 and "p_0000.nii.gz" in problems[0] and "p_0001.nii.gz" in problems[0]


def test_undiscoverable_paths(tmp_path: Path) -> None:
    assert "does not exist" in check_dataset(tmp_path / "missing")[0]
    (tmp_path / "empty").mkdir()
    problems = check_dataset(tmp_path / "empty")
    assert len(problems) == 1 and "empty" in problems[0]
    report = check_dataset_report(tmp_path / "empty")
    assert report.layout is None and not report.ok

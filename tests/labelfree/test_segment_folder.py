"""``segment_folder``: inputs checked before the output folder is touched, and the per-image loop's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl import api
from medssl.errors import MedsslError
from tests.labelfree.conftest import dermoscopy_like


def _grey(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (24, 24), dtype=np.uint8)).save(folder / name)
    return folder


def _with_nan(folder: Path) -> Path:
    """``a.png`` and a 2D NIfTI image holding NaN."""
    _grey(folder, "a.png")
    image = np.full((24, 24), 100.0, np.float32)
    image[:4] = np.nan
    nib.save(nib.Nifti1Image(image, np.eye(4)), folder / "b_nan.nii.gz")
    return folder


def test_a_refused_input_leaves_the_output_overwrite_would_replace(tmp_path: Path) -> None:
    seg = tmp_path / "seg"
    api.segment(_grey(tmp_path / "good", "a.png"), seg, method="kmeans", quiet=True)
    before = {p.name: p.read_bytes() for p in seg.iterdir() if p.is_file()}
    with pytest.raises(MedsslError, match="b_nan.nii.gz"):
        api.segment(_with_nan(tmp_path / "bad"), seg, method="kmeans", overwrite=True, quiet=True)
    assert {p.name: p.read_bytes() for p in seg.iterdir() if p.is_file()} == before


def test_the_refusal_counts_every_input(tmp_path: Path) -> None:
    with pytest.raises(MedsslError, match=r"^1 of 2 input image\(s\) cannot be used, nothing was written"):
        api.segment(_with_nan(tmp_path / "in"), tmp_path / "seg", method="kmeans", quiet=True)


def test_ten_images_give_two_overlay_pages_and_records_in_input_order(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    names = [f"case{i:02d}" for i in range(10)]
    for i, name in enumerate(names):
        picture, _ = dermoscopy_like((32, 40), seed=i)
        Image.fromarray(np.moveaxis(picture, 0, -1)).save(images / f"{name}.png")
    result = api.segment(images, tmp_path / "seg", method="kmeans", select="border", quiet=True)
    assert [p.name for p in result.maps] == [f"{name}.png" for name in names]
    assert [p.name for p in result.overlays] == ["page_01.png", "page_02.png"]
    assert sorted(p.name for p in (tmp_path / "seg" / "overlays").iterdir()) == ["page_01.png", "page_02.png"]
    run = json.loads((tmp_path / "seg" / "run.json").read_text())
    assert [r["case"] for r in run["images"]] == names == [r["case"] for r in result.records]
    for record, map_path in zip(run["images"], result.maps, strict=True):
        labels = np.asarray(Image.open(map_path))
        sizes = {str(c): int((labels == c).sum()) for c in range(1, labels.max() + 1) if (labels == c).any()}
        assert record["cluster_sizes"] == sizes
        selected = np.asarray(Image.open(tmp_path / "seg" / "selected" / f"{record['case']}.png"))
        np.testing.assert_array_equal(selected, (labels == record["selected_cluster"]) * 255)


def test_without_a_rule_the_lesion_rule_writes_the_masks(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    picture, lesion = dermoscopy_like((64, 80))
    Image.fromarray(np.moveaxis(picture, 0, -1)).save(images / "case.png")
    result = api.segment(images, tmp_path / "seg", method="kmeans", quiet=True)
    record = json.loads((tmp_path / "seg" / "run.json").read_text())["images"][0]
    assert record["selected_rule"] == "lesion" == result.records[0]["selected_rule"]
    selected = np.asarray(Image.open(tmp_path / "seg" / "selected" / "case.png")) > 0
    assert 2 * (selected & lesion).sum() / (selected.sum() + lesion.sum()) > 0.9

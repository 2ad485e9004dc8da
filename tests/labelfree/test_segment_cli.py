"""``medssl segment`` and ``medssl evaluate --protocol`` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from PIL import Image

from medssl import api
from medssl.errors import MedsslError
from tests.labelfree.conftest import dermoscopy_like
from tests.test_cli import assert_clean_error, medssl

TINY_S3 = {
    "size": 32,
    "channels": 8,
    "blocks": 1,
    "max_iterations": 3,
    "min_iterations": 1,
    "start_iterations": 1,
    "hair_size": 0,
    "boundary_factor": 8,
}


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """``images/`` (two RGB pictures of different sizes) and ``masks/`` (0/255 lesion masks)."""
    for i, size in enumerate(((48, 64), (40, 40))):
        image, lesion = dermoscopy_like(size, seed=i)
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.moveaxis(image, 0, -1)).save(tmp_path / "images" / f"case{i}.png")
        Image.fromarray(lesion.astype(np.uint8) * 255).save(tmp_path / "masks" / f"case{i}.png")
    return tmp_path


def test_kmeans_segment_then_evaluate_end_to_end(pictures: Path) -> None:
    out = pictures / "out"
    proc = medssl("segment", "--method", "kmeans", "--input", pictures / "images", "--out", out, "--select", "border")
    assert proc.returncode == 0, proc.stderr
    for i, shape in enumerate(((48, 64), (40, 40))):
        labels = np.asarray(Image.open(out / f"case{i}.png"))
        assert labels.shape == shape and set(np.unique(labels)) <= {0, 1, 2}
        assert (out / "selected" / f"case{i}.png").is_file()
    assert (out / "overlays" / "page_01.png").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "kmeans"
    assert len(json.loads((out / "run.json").read_text())["images"]) == 2
    report = pictures / "eval.json"
    proc = medssl(
        "evaluate", "--pred", out, "--truth", pictures / "masks", "--protocol", "best-cluster", "--out", report
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(report.read_text())
    assert result["settings"]["protocol"] == "best-cluster"
    assert result["summary"]["255"]["dice"] > 0.8
    assert (pictures / "eval.csv").read_text().startswith("case,label,dice,hd95,hd,nsd,xor,cluster,n_clusters")
    assert_clean_error(
        medssl("evaluate", "--pred", out, "--truth", pictures / "masks", "--protocol", "oracle"), "oracle"
    )
    paper = api.evaluate(out, pictures / "masks", protocol="paper-code")
    assert paper["summary"]["255"]["hm"] is not None
    darkest = api.evaluate(out, pictures / "masks", protocol="darkest", images=pictures / "images")
    assert [r["cluster"] for r in darkest["cases"]] == [1, 1]
    with pytest.raises(MedsslError, match="--images"):
        api.evaluate(out, pictures / "masks", protocol="darkest")


def test_s3_segment_with_a_config_file_and_clusters(pictures: Path) -> None:
    config = pictures / "s3.yaml"
    config.write_text(yaml.safe_dump(TINY_S3))
    out = pictures / "s3"
    proc = medssl(
        "segment",
        "--method",
        "s3",
        "--input",
        pictures / "images" / "case1.png",
        "--out",
        out,
        "--config",
        config,
        "--clusters",
        "3",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    labels = np.asarray(Image.open(out / "case1.png"))
    assert labels.shape == (40, 40) and labels.max() <= 3
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["clusters"] == 3 and saved["channels"] == 8
    assert_clean_error(medssl("segment", "--method", "s3", "--input", pictures / "images", "--out", out), "--overwrite")


def test_segment_user_errors(pictures: Path, tmp_path: Path) -> None:
    images = pictures / "images"
    assert_clean_error(medssl("segment", "--method", "sam", "--input", images, "--out", tmp_path / "x"), "sam")
    with pytest.raises(MedsslError, match="does not exist"):
        api.segment(tmp_path / "missing", tmp_path / "y")
    with pytest.raises(MedsslError, match="clusters"):
        api.segment(images, tmp_path / "z", method="kmeans", clusters=1)
    with pytest.raises(MedsslError, match="select"):
        api.segment(images, tmp_path / "s", method="kmeans", select="brightest")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(MedsslError, match="YAML"):
        api.segment(images, tmp_path / "w", config=bad)
    volume = tmp_path / "vol"
    volume.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), volume / "v.nii.gz")
    with pytest.raises(MedsslError, match="2D"):
        api.segment(volume, tmp_path / "v", method="kmeans")

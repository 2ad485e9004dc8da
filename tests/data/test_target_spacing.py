"""``target_spacing``: training on a coarser grid than the images', with predictions on each image's own grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medssl import api
from medssl.data.geometry import ImageMeta
from medssl.data.io import read_label
from medssl.data.loading import LoadedCase
from medssl.data.plan import compute_fingerprint, make_plan
from medssl.data.preprocess import encode_target, preprocess_image
from medssl.errors import MedsslError
from tests.conftest import TINY


def _png_case(shape: tuple[int, int]) -> LoadedCase:
    rng = np.random.default_rng(0)
    label = np.zeros(shape, np.int64)
    label[4:12, 6:14] = 1
    meta = ImageMeta.default(shape, physical=False)
    return LoadedCase("c", rng.normal(size=(1, *shape)).astype(np.float32), meta, label=label)


def test_target_spacing_resamples_images_and_targets() -> None:
    case = _png_case((32, 24))
    fp = compute_fingerprint([case], None)
    assert make_plan(fp).target_spacing is None  # PNG: no physical spacing, the images' own grid
    plan = make_plan(fp, target_spacing=[2.0, 3.0])
    assert plan.target_spacing == [2.0, 3.0]
    assert preprocess_image(case.image, case.meta, plan).shape == (1, 16, 8)
    target = encode_target(case, plan)
    assert target.shape == (1, 16, 8) and target.sum() == 4 * 3  # the 8x8 square on the coarser grid


@pytest.mark.parametrize("bad", [[2.0], [2.0, 0.0], [1.0, 1.0, 1.0]])
def test_a_target_spacing_that_does_not_fit_is_refused(bad: list[float]) -> None:
    fp = compute_fingerprint([_png_case((16, 16))], None)
    with pytest.raises(MedsslError, match="target_spacing"):
        make_plan(fp, target_spacing=bad)


def test_finetune_on_a_coarser_grid_predicts_on_the_images_grid(paired_2d: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    opts = {**TINY, "channels": [8, 16], "val_interval": 40, "target_spacing": [2.0, 2.0], "patch_size": [16, 16]}
    result = api.finetune(paired_2d, run, max_steps=80, quiet=True, **opts)
    assert json.loads((run / "plan.json").read_text())["target_spacing"] == [2.0, 2.0]
    prediction = next((run / "predictions" / "test").iterdir())
    assert read_label(prediction)[0].shape == (32, 32)  # back on the 32x32 grid of the image
    assert result.test_summary["foreground"]["dice"] > 0.7

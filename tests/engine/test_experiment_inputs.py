"""``run_label_efficiency`` checks the data and the split before it touches the experiment folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from medssl import api
from medssl.engine.run_folder import prepare_output_dir
from medssl.errors import MedsslError


@pytest.mark.parametrize(
    ("finetune", "bad_mask", "message"),
    [
        ({}, True, "shape mismatch: image images/case03.png is 32x32 but mask masks/case03.png is 20x32"),
        ({"test_fraction": 0.01}, False, "the split has no test case"),
    ],
    ids=["bad-case", "no-test-case"],
)
def test_refused_data_leaves_the_experiment_overwrite_would_replace(
    paired_2d: Path, tmp_path: Path, finetune: dict[str, Any], bad_mask: bool, message: str
) -> None:
    out = prepare_output_dir(tmp_path / "exp", kind="experiment")  # an earlier experiment's folder
    (out / "runs.csv").write_text("kept")
    if bad_mask:
        Image.fromarray(np.zeros((20, 32), np.uint8)).save(paired_2d / "masks" / "case03.png")
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump({"methods": ["random"], "finetune": finetune}))
    with pytest.raises(MedsslError, match=message):
        api.label_efficiency(paired_2d, out, config=config, overwrite=True, accelerator="cpu", quiet=True)
    assert (out / "runs.csv").read_text() == "kept"

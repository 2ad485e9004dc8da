"""``medssl demo``: the whole pipeline on real data that installs with the package.

The MNI ICBM152 2009 T1 template and its grey/white-matter probability maps ship inside the ``nilearn``
wheel (Fonov et al. 2011). The demo cuts axial 2 mm slices from it into a Decathlon-style dataset with labels
background / grey matter / white matter (the maps thresholded at 0.5, the larger one winning), fine-tunes a
2D U-Net on the lower and upper slices, and predicts and scores a held-out contiguous slab in between, so that
neighbouring slices cannot leak into the test cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from medssl import api
from medssl.engine.run_folder import prepare_output_dir, removed_on_failure
from medssl.errors import MedsslError

_LABELS = {"0": "background", "1": "grey matter", "2": "white matter"}


def build_demo_dataset(root: Path, step: int = 2) -> dict[str, list[str]]:
    """Write the slices as 2D NIfTI (keeping their 2 mm spacing) and return the train/val/test split."""
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise MedsslError("the demo needs nilearn (pip install nilearn)") from exc
    t1 = datasets.load_mni152_template(resolution=2)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=2).dataobj, dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)
    image = np.asarray(t1.dataobj, dtype=np.float32)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[(gm >= 0.5) & (gm >= wm)] = 1
    labels[(wm >= 0.5) & (wm > gm)] = 2
    affine = np.asarray(t1.affine)
    slice_affine = np.eye(4)
    slice_affine[:2, :2] = affine[:2, :2]
    slice_affine[:2, 3] = affine[:2, 3]
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    brain = np.flatnonzero(labels.any(axis=(0, 1)))
    ids = []
    for z in range(int(brain.min()) + 2, int(brain.max()) - 1, step):
        case = f"mni_z{z:03d}"
        nib.save(nib.Nifti1Image(image[:, :, z], slice_affine), root / "imagesTr" / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(labels[:, :, z], slice_affine), root / "labelsTr" / f"{case}.nii.gz")
        ids.append(case)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "MNI152 slices",
                "description": "axial slices of the MNI ICBM152 2009 template (nilearn)",
                "modality": {"0": "MRI"},
                "labels": _LABELS,
                "numTraining": len(ids),
                "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
            },
            indent=2,
        )
    )
    n = len(ids)
    test = ids[int(n * 0.45) : int(n * 0.62)]
    val = ids[int(n * 0.25) : int(n * 0.30)]
    train = [c for c in ids if c not in test and c not in val and c not in _neighbours(ids, test + val)]
    return {"train": train, "train_labelled": train, "val": val, "test": test}


def _neighbours(ids: list[str], held: list[str]) -> set[str]:
    """The slices right next to a held-out slab, left out of training as a gap."""
    pos = {c: i for i, c in enumerate(ids)}
    gap = set()
    for c in held:
        for j in (pos[c] - 1, pos[c] + 1):
            if 0 <= j < len(ids) and ids[j] not in held:
                gap.add(ids[j])
    return gap


def run_demo(out: str | Path, *, max_steps: int = 300, overwrite: bool = False) -> str:
    """Build the dataset, fine-tune, predict and score the held-out slab; return a short report."""
    with removed_on_failure(out):
        return _run_demo(out, max_steps, overwrite)


def _run_demo(out: str | Path, max_steps: int, overwrite: bool) -> str:
    root = prepare_output_dir(out, kind="demo", overwrite=overwrite)
    data = root / "data"
    split = build_demo_dataset(data)
    split_file = root / "split.json"
    split_file.write_text(json.dumps(split, indent=2))
    result = api.finetune(
        data, root / "run", max_steps=max_steps, split_file=split_file, val_interval=100, batch_size=8
    )
    lines = [
        f"demo finished: trained on {len(split['train'])} slices, held out {len(split['test'])} (a contiguous slab)",
        "test Dice: "
        + ", ".join(f"{k} {v['dice']:.3f}" for k, v in result.test_summary.items() if v.get("dice") is not None),
        f"report and run folder: {result.run_dir}",
    ]
    lines += [f"  {what}: {path}" for what, path in result.files.items()]
    report = "\n".join(lines)
    (result.run_dir / "demo_report.txt").write_text(report + "\n")
    return report

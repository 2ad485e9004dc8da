"""``benchmarks/partial_labels.py``'s data preparation: the fixed split, the groups of training cases, the partial
paired-multilabel copy (``annotations.json``, linked or extracted masks) and its checks, on tiny synthetic folders."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medssl.data.layouts import discover
from medssl.engine.experiment_report import RunRecord
from medssl.errors import MedsslError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
GROUPS_2D = {"lungs": ["left_lung", "right_lung"], "heart": ["heart"]}
GROUPS_3D = {"anterior": ["anterior"], "posterior": ["posterior"]}
AFFINE = np.array([[0.0, 0.0, 1.5, -10.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 2.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture
def pl(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports ``_common`` as a top-level module
    return importlib.import_module("partial_labels")


def _paired(root: Path, n: int = 4) -> Path:
    """A 2D paired-multilabel dataset: ``n`` 8x8 PNGs with left_lung, right_lung and heart masks."""
    rng = np.random.default_rng(0)
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / "images" / f"c{i}.png")
        for k, name in enumerate(("left_lung", "right_lung", "heart")):
            mask = np.zeros((8, 8), np.uint8)
            mask[k : k + 3, i : i + 3] = 255
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / name / f"c{i}.png")
    return root


def _msd(root: Path, n: int = 4) -> Path:
    """A 3D MSD dataset: ``n`` 6x5x4 volumes with label 1 (Anterior) and 2 (Posterior), an oblique affine."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    labels = {"0": "background", "1": "Anterior", "2": "Posterior"}
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "modality": {"0": "MRI"}}))
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.normal(size=(6, 5, 4)).astype(np.float32)
        label = np.zeros((6, 5, 4), np.uint8)
        label[1:3, 1:4, 1:3] = 1
        label[3:5, 1 : 2 + i % 3, 1:3] = 2
        nib.save(nib.Nifti1Image(image, AFFINE), root / "imagesTr" / f"hip_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(label, AFFINE), root / "labelsTr" / f"hip_{i:03d}.nii.gz")
    return root


def test_groups_are_balanced_disjoint_and_cover_the_training_cases(pl: ModuleType) -> None:
    train = [f"case{i:02d}" for i in range(10)]
    groups = {"lungs": ["right_lung", "left_lung"], "heart": ["heart"], "clavicles": ["left_clavicle"]}
    annotates = pl.assign_groups(train, groups)
    assert sorted(annotates) == train  # every training case, once: disjoint groups that cover them
    sizes = {name: sum(v == sorted(s) for v in annotates.values()) for name, s in groups.items()}
    assert sorted(sizes.values()) == [3, 3, 4]
    assert pl.assign_groups(list(reversed(train)), groups) == annotates  # seeded, independent of the order given
    assert pl.assign_groups(train, groups, seed=1) != annotates


def test_paired_multilabel_partial_copy(pl: ModuleType, tmp_path: Path) -> None:
    source = _paired(tmp_path / "src")
    partial, split_file, split = pl.prepare(source, tmp_path / "work", GROUPS_2D)
    assert json.loads(split_file.read_text()) == split == pl.fixed_split(["c0", "c1", "c2", "c3"])
    declared = json.loads((partial / "annotations.json").read_text())
    assert sorted(declared) == split["train"]  # validation and test cases stay fully annotated
    assert all(v in (["left_lung", "right_lung"], ["heart"]) for v in declared.values())
    index = discover(partial)
    assert index.partially_annotated and not index.problems and not index.notes
    for case in index.cases:
        assert case.annotated == (tuple(declared[case.case_id]) if case.case_id in declared else None)
        assert case.images[0].is_symlink() and case.images[0].resolve() == source / "images" / f"{case.case_id}.png"
        for name in ("left_lung", "right_lung", "heart"):  # only the annotated structures' masks are there
            wanted = case.annotated is None or name in case.annotated
            link = partial / "masks" / name / f"{case.case_id}.png"
            assert link.is_symlink() == wanted
            assert not wanted or link.resolve() == source / "masks" / name / f"{case.case_id}.png"
    assert pl.prepare(source, tmp_path / "work", GROUPS_2D)[2] == split  # prepared again: kept as it is


def test_label_map_partial_copy_writes_binary_masks_with_the_geometry(pl: ModuleType, tmp_path: Path) -> None:
    source = _msd(tmp_path / "src")
    partial, _, split = pl.prepare(source, tmp_path / "work", GROUPS_3D)
    declared = json.loads((partial / "annotations.json").read_text())
    assert sorted(declared) == split["train"] and sorted(declared.values()) == [["anterior"], ["posterior"]]
    index = discover(partial)
    assert index.layout == "paired-multilabel" and index.partially_annotated and not index.problems
    assert index.structures == ["anterior", "posterior"]
    for case in index.cases:
        assert case.annotated == (tuple(declared[case.case_id]) if case.case_id in declared else None)
        label = nib.load(source / "labelsTr" / f"{case.case_id}.nii.gz")
        assert case.structures is not None
        for name, value in (("anterior", 1), ("posterior", 2)):
            path = partial / "masks" / name / f"{case.case_id}.nii.gz"
            assert path.is_file() == (case.annotated is None or name in case.annotated)
            if path.is_file():
                mask = nib.load(path)
                np.testing.assert_array_equal(np.asarray(mask.dataobj), np.asarray(label.dataobj) == value)
                np.testing.assert_allclose(mask.affine, label.affine, atol=1e-5)


def test_a_folder_prepared_otherwise_is_refused(pl: ModuleType, tmp_path: Path) -> None:
    index = discover(_paired(tmp_path / "src"))
    out = pl.write_partial(index, tmp_path / "partial", {"c0": ["heart"]})
    assert pl.write_partial(index, out, {"c0": ["heart"]}) == out
    with pytest.raises(MedsslError, match="another partial dataset"):
        pl.write_partial(index, out, {"c1": ["heart"]})
    with pytest.raises(MedsslError, match="unknown structure 'liver'"):
        pl.write_partial(index, tmp_path / "other", {"c0": ["liver"]})


def test_a_run_with_other_test_cases_is_refused(pl: ModuleType, tmp_path: Path) -> None:
    split = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    (tmp_path / "split.json").write_text(json.dumps({**split, "train_labelled": ["a", "b"]}))
    pl.check_split(tmp_path, split)
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a", "d"], "val": ["c"], "test": ["b"]}))
    with pytest.raises(MedsslError, match="test cases are not the fixed split's"):
        pl.check_split(tmp_path, split)


def test_summary_compares_with_separate_and_full(pl: ModuleType) -> None:
    def record(method: str, seed: int, dice: float) -> RunRecord:
        return RunRecord(method, 1.0, seed, dice, {"heart": dice}, {"c": dice}, train_seconds=1.0, steps=10)

    scores = {"dodnet": (0.80, 0.84), "separate": (0.78, 0.80), "full": (0.81, 0.85)}
    records = [record(m, s, d) for m, ds in scores.items() for s, d in enumerate(ds)]
    runs = [
        {"method": r.method, "seed": r.seed, "test_dice": r.mean_dice, "test_hd95": 2.0, "steps": 10,
         "stopped": "plateau", "structures": {"heart": {"dice": r.mean_dice, "hd95": 2.0 + r.seed}}}
        for r in records
    ]  # fmt: skip
    rows = {r["method"]: r for r in pl.summarize(records, runs)}
    assert math.isclose(rows["dodnet"]["diff_vs_separate"], 0.03)
    assert math.isclose(rows["dodnet"]["diff_vs_full"], -0.01)
    assert rows["full"]["diff_vs_full"] is None and rows["separate"]["diff_vs_separate"] is None
    assert rows["dodnet"]["hd95_heart"] == 2.5 and rows["dodnet"]["stopped"] == {"plateau": 2}
    assert pl.targets(list(rows.values())) == {"dodnet_ge_separate": True, "dodnet_within_2_points_of_full": True}


def test_previous_runs_all_join_with_the_commit_each_ran_at(pl: ModuleType, tmp_path: Path) -> None:
    def row(method: str, seed: int, dice: float) -> dict[str, object]:
        return {
            "method": method,
            "seed": seed,
            "test_dice": dice,
            "structures": {"heart": {"dice": dice, "hd95": 3.0}},
            "case_dice": {"a": dice, "b": dice - 0.1},
            "train_seconds": 10.0,
            "steps": 100,
            "stopped": "plateau",
            "best_val_dice": dice,
        }

    earlier = {
        "benchmark": "partial_labels_jsrt",
        "commit": "abc+dirty",
        "settings": {"previous": {"file": "older.json", "commit": "old", "seeds": [0]}},
        "results": {"runs": [row("dodnet", 0, 0.9), row("separate", 0, 0.8), {**row("dodnet", 1, 0.7), "commit": "new"},
                             row("multihead", 1, 0.6)]},
    }  # fmt: skip
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    records, rows, source = pl.previous_runs(path)
    assert [(r.method, r.seed) for r in records] == [("dodnet", 0), ("separate", 0), ("dodnet", 1), ("multihead", 1)]
    assert records[1].dice == {"heart": 0.8} and records[1].case_dice["b"] == pytest.approx(0.7)
    # Seed 0 came from the file before (its commit); a row that names its commit keeps it; the rest ran at "abc".
    assert [r["commit"] for r in rows] == ["old", "old", "new", "abc+dirty"]
    assert source == {"file": "earlier.json", "commit": "abc+dirty",
                      "runs": ["dodnet/seed0", "dodnet/seed1", "multihead/seed1", "separate/seed0"]}  # fmt: skip
    path.write_text(json.dumps({**earlier, "benchmark": "adversarial_ph2"}))
    with pytest.raises(MedsslError, match="not a result of this benchmark"):
        pl.previous_runs(path)


def test_the_grid_runs_only_what_the_previous_result_lacks(
    pl: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid continued from an earlier result file trains the missing (method, seed) pairs only, and its new rows
    name the commit their run folders were trained at."""
    earlier = tmp_path / "earlier.json"
    done = {"method": "dodnet", "seed": 0, "test_dice": 0.9, "test_hd95": 1.0,
            "structures": {"heart": {"dice": 0.9, "hd95": 1.0}}, "case_dice": {"a": 0.9}, "train_seconds": 1.0,
            "steps": 5, "stopped": "plateau", "best_val_dice": 0.9,
            "commit": "old"}  # fmt: skip
    earlier.write_text(json.dumps({"benchmark": "partial_labels_jsrt", "commit": "old", "results": {"runs": [done]}}))
    trained: list[tuple[str, int]] = []
    written: list[dict[str, object]] = []
    monkeypatch.setattr(pl, "require", lambda path: path)
    split = {"train": [], "val": [], "test": []}
    monkeypatch.setattr(pl, "prepare", lambda source, work, groups: (tmp_path, tmp_path / "split.json", split))
    monkeypatch.setattr(pl, "check_split", lambda run, split: None)
    monkeypatch.setattr(pl, "trained_at", lambda run: "now")  # the commit each run folder stores
    monkeypatch.setattr(pl, "run_one", lambda work, method, seed, *rest: trained.append((method, seed)) or tmp_path)

    def run_record(run: Path, method: str, seed: int) -> tuple[RunRecord, dict[str, object]]:
        row = {**done, "method": method, "seed": seed}
        del row["commit"]
        return dataclasses.replace(pl.previous_runs(earlier)[0][0], method=method, seed=seed), row

    monkeypatch.setattr(pl, "run_record", run_record)
    monkeypatch.setattr(pl, "write_result", lambda name, settings, results: written.append(results))
    args = pl.argparse.Namespace(
        dataset="jsrt", methods="dodnet,multihead", seeds="0,1", previous=earlier, work=tmp_path, prepare_only=False
    )
    pl.run_grid(args)
    assert trained == [("multihead", 0), ("dodnet", 1), ("multihead", 1)]
    runs = written[-1]["runs"]
    assert [(r["method"], r["seed"], r["commit"]) for r in runs] == [  # type: ignore[attr-defined]
        ("dodnet", 0, "old"), ("multihead", 0, "now"), ("dodnet", 1, "now"), ("multihead", 1, "now")
    ]  # fmt: skip

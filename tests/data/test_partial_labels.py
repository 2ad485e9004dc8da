"""Partially labelled data: ``annotations.json`` declares which structures each case of a paired-multilabel dataset
annotates; discovery, loading, ``data check`` and the per-case fields of the patch and case datasets carry it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from medssl.data.check import check_dataset_report
from medssl.data.layouts import Case, discover
from medssl.data.loading import load_checked_cases
from medssl.data.sampling import CaseDataset, PatchDataset
from medssl.data.split import make_split
from medssl.errors import MedsslError

STRUCTURES = ("heart", "lung")


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def _dataset(root: Path, n: int = 6, without: dict[str, list[str]] | None = None) -> Path:
    """``images/cK.png`` of constant value 10 * (K + 1) and ``masks/<structure>/cK.png``; ``without``: case ->
    structures whose mask file is not written."""
    without = without or {}
    for k in range(n):
        case = f"c{k}"
        _png(root / "images" / f"{case}.png", np.full((8, 8), 10 * (k + 1)))
        for s, structure in enumerate(STRUCTURES):
            if structure not in without.get(case, []):
                mask = np.zeros((8, 8))
                mask[2 + s : 5 + s, 2:6] = 255
                _png(root / "masks" / structure / f"{case}.png", mask)
    return root


def _declare(root: Path, declaration: object) -> None:
    (root / "annotations.json").write_text(json.dumps(declaration))


def test_the_declaration_is_read(tmp_path: Path) -> None:
    root = _dataset(tmp_path, without={"c0": ["lung"], "c1": ["heart"]})
    _declare(root, {"c0": ["heart"], "c1": ["lung"], "c2": ["lung", "heart"]})
    index = discover(root)
    assert not index.problems and index.partially_annotated
    assert [c.case_id for c in index.cases] == [f"c{k}" for k in range(6)]
    by_id = {c.case_id: c for c in index.cases}
    assert by_id["c0"].annotated == ("heart",) and by_id["c0"].structures == {"heart": root / "masks/heart/c0.png"}
    assert by_id["c1"].annotated == ("lung",) and set(by_id["c1"].structures or {}) == {"lung"}
    assert by_id["c2"].annotated is None  # declares every structure: fully annotated
    assert by_id["c3"].annotated is None and set(by_id["c3"].structures or {}) == set(STRUCTURES)


def test_a_mask_of_a_structure_the_case_does_not_annotate_is_ignored_with_a_note(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    _declare(root, {"c0": ["heart"]})
    index = discover(root)
    assert not index.problems and set(index.cases[0].structures or {}) == {"heart"}
    assert any("1 mask file(s)" in note and "annotations.json" in note for note in index.notes)


def test_a_declared_missing_mask_is_a_problem_an_undeclared_one_is_not(tmp_path: Path) -> None:
    root = _dataset(tmp_path, without={"c0": ["lung"], "c1": ["lung"], "c2": ["lung"]})
    _declare(root, {"c0": ["heart"], "c1": ["heart", "lung"]})  # c2 not listed: every structure
    index = discover(root)
    assert [c.case_id for c in index.cases] == ["c0", "c3", "c4", "c5"]
    assert len(index.problems) == 2
    assert "images/c1.png" in index.problems[0] and "masks/lung/" in index.problems[0]
    assert "images/c2.png" in index.problems[1] and "masks/lung/" in index.problems[1]


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        ({"c0": ["liver"]}, "annotations.json: case 'c0' names unknown structure 'liver'"),
        ({"c9": ["heart"]}, "annotations.json: unknown case 'c9'"),
        ({"c0": []}, "annotations.json: case 'c0' annotates no structure"),
        (["c0"], "annotations.json: must map each case id to a list of structure names"),
        ({"c0": "heart"}, "annotations.json: must map each case id to a list of structure names"),
    ],
)
def test_wrong_names_are_problems(tmp_path: Path, declaration: object, expected: str) -> None:
    root = _dataset(tmp_path, without={"c0": ["lung"]})
    _declare(root, declaration)
    report = check_dataset_report(root)
    assert [p for p in report.problems if p.startswith("annotations.json")] == [
        next(p for p in report.problems if p.startswith(expected))
    ]
    assert "\n" not in expected


def test_unreadable_declaration_is_a_problem(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    (root / "annotations.json").write_text("{not json")
    problems = discover(root).problems
    assert len(problems) == 1 and problems[0].startswith("annotations.json: cannot read it as JSON")


def test_without_a_declaration_the_index_is_unchanged(tmp_path: Path) -> None:
    root = _dataset(tmp_path, n=3, without={"c0": ["lung"]})
    index = discover(root)
    # an image lacking a structure's mask is a pairing problem, and every case is a plain (fully annotated) one
    assert index.problems == ["image without mask: images/c0.png (nothing matching 'c0' in masks/lung/)"]
    assert index.cases == [
        Case(c, (root / f"images/{c}.png",), None, {s: root / f"masks/{s}/{c}.png" for s in STRUCTURES})
        for c in ("c1", "c2")
    ]
    assert not index.notes and not index.partially_annotated
    # a declaration that every case annotates everything gives the same index
    _declare(root, {"c1": list(STRUCTURES), "c2": list(STRUCTURES)})
    declared = discover(root)
    assert declared.cases == index.cases and declared.notes == index.notes
    assert declared.problems == ["image without mask: images/c0.png (nothing matching 'c0' in masks/lung/; "
                                 "annotations.json does not leave 'lung' out)"]  # fmt: skip


def test_loaded_cases_carry_the_annotated_structures_and_zero_masks(tmp_path: Path) -> None:
    root = _dataset(tmp_path, without={"c0": ["heart"]})
    _declare(root, {"c0": ["lung"]})
    index = discover(root)
    checked = load_checked_cases(index, index.cases)
    assert not checked.bad
    c0, c1 = checked.loaded["c0"], checked.loaded["c1"]
    assert c0.annotated is not None and c0.annotated.tolist() == [False, True] and c0.annotated.dtype == bool
    assert c0.structures is not None and c0.structures.shape == (2, 8, 8)
    assert not c0.structures[0].any() and c0.structures[1].sum() == 12  # unannotated: zeros, never a sentinel
    assert c1.annotated is None and c1.structures is not None and c1.structures[0].sum() == 12


def test_data_check_reports_partial_annotation(tmp_path: Path) -> None:
    root = _dataset(tmp_path, without={"c0": ["heart"], "c1": ["lung"], "c2": ["lung"]})
    _declare(root, {"c0": ["lung"], "c1": ["heart"], "c2": ["heart"]})
    report = check_dataset_report(root)
    assert report.ok and report.n_cases == 6
    assert report.notes == [
        "3 of 6 case(s) annotate only some structures (annotations.json); cases per structure: heart 5, lung 4"
    ]
    assert check_dataset_report(_dataset(tmp_path / "full")).notes == []


# ------------------------------------------------------------------------------------- per-case fields, split


def _constant_cases(n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Images of constant value K + 1 (which case a patch is from), targets, and a distinct ``annotated`` row each."""
    images = [np.full((1, 12, 12), k + 1, np.float32) for k in range(n)]
    targets = [np.zeros((2, 12, 12), np.uint8) for _ in range(n)]
    for t in targets:
        t[:, 4:8, 4:8] = 1
    annotated = [np.array([k % 2 == 0, k % 3 == 0]) for k in range(n)]
    return images, targets, annotated


def test_patch_batches_carry_the_annotated_rows_of_their_cases() -> None:
    images, targets, annotated = _constant_cases(5)
    patches = PatchDataset(
        images, targets, [8, 8], 40, case_fields={"annotated": annotated}, intensity_probability=0.0, seed=3
    )
    batches = list(DataLoader(patches, batch_size=4))
    assert batches[0]["annotated"].shape == (4, 2) and batches[0]["annotated"].dtype == torch.bool
    seen = set()
    for batch in batches:
        for image, row in zip(batch["image"], batch["annotated"], strict=True):
            case = int(image.max().item()) - 1  # the patch's unpadded voxels hold the case's value
            seen.add(case)
            assert row.tolist() == annotated[case].tolist()
    assert len(seen) > 2
    cases = CaseDataset(images, targets, case_fields={"annotated": annotated})
    for k, item in enumerate(DataLoader(cases, batch_size=1)):
        assert item["annotated"].tolist() == [annotated[k].tolist()]


def test_case_fields_leave_the_patch_stream_unchanged() -> None:
    images, targets, annotated = _constant_cases(5)
    images = [im + np.random.default_rng(k).normal(size=im.shape).astype(np.float32) for k, im in enumerate(images)]
    options = {"flip_axes": [0, 1], "intensity_probability": 0.5, "seed": 7}
    plain = PatchDataset(images, targets, [8, 8], 30, **options)  # type: ignore[arg-type]
    fielded = PatchDataset(images, targets, [8, 8], 30, case_fields={"annotated": annotated}, **options)  # type: ignore[arg-type]
    for a, b in zip(DataLoader(plain, batch_size=3), DataLoader(fielded, batch_size=3), strict=True):
        assert set(b) == {*a, "annotated"}
        for name in a:
            assert torch.equal(a[name], b[name])


def test_case_fields_are_checked() -> None:
    images, targets, annotated = _constant_cases(3)
    with pytest.raises(ValueError, match="2 annotated array"):
        PatchDataset(images, targets, [8, 8], 4, case_fields={"annotated": annotated[:2]})
    with pytest.raises(ValueError, match="case field 'target'"):
        CaseDataset(images, targets, case_fields={"target": annotated})


def test_the_split_holds_out_only_fully_annotated_cases() -> None:
    ids = [f"c{k:02d}" for k in range(20)]
    full = ids[::4]  # 5 cases
    for split_seed in range(5):
        split = make_split(ids, test_fraction=0.1, val_fraction=0.1, split_seed=split_seed, held_out_from=full)
        assert len(split["test"]) == 2 and len(split["val"]) == 2
        assert set(split["test"]) | set(split["val"]) <= set(full)
        assert sorted([*split["train"], *split["val"], *split["test"]]) == ids
    with pytest.raises(MedsslError, match="only 5 of 20 case\\(s\\) annotate every structure.*needs 6"):
        make_split(ids, test_fraction=0.2, val_fraction=0.1, held_out_from=full)

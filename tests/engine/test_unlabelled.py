"""Unlabelled images in fine-tuning (``System.uses_unlabelled``): where they come from, that the labelled stream is
unchanged, the refusals, and resume.

Every case of the dataset has its own constant value in the red channel (RGB PNGs are scaled by 1/255, not
z-scored), so that a patch says which case it was cut from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from medssl import api, registry
from medssl.config import FinetuneConfig
from medssl.data.layouts import discover
from medssl.data.loading import load_checked_case
from medssl.data.plan import Plan
from medssl.data.preprocess import encode_target, preprocess_image
from medssl.data.sampling import PatchDataset, WithUnlabelledPatches, unlabelled_seed
from medssl.data.split import make_split
from medssl.errors import MedsslError
from medssl.segment.supervised import SupervisedSegmentation
from medssl.systems import Batch
from tests.conftest import TINY

SETTINGS: dict[str, Any] = {**TINY, "patch_size": [16, 16], "intensity_probability": 0.0}
FOLDER_VALUE = 250  # the red value of every image of the unlabelled folder


def _red(case: int) -> int:
    return 10 + 20 * case


def _cases_of(patches: Tensor) -> set[int]:
    """The cases a batch of patches ``(B, 3, *patch)`` was cut from (-1: the unlabelled folder's images)."""
    found = set()
    for patch in patches:
        red = patch[0]
        assert torch.all(red == red.flatten()[0]), "a patch of one image is one constant red value"
        value = round(float(red.flatten()[0]) * 255)
        found.add(-1 if value == FOLDER_VALUE else (value - 10) // 20)
    return found


def _ids(cases: set[int]) -> set[str]:
    return {f"case{k:02d}" for k in cases}


@pytest.fixture
def coded(tmp_path: Path) -> Path:
    """``images/`` + ``masks/``: 10 RGB cases, red constant per case, green a disc (the mask)."""
    root = tmp_path / "coded"
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for k in range(10):
        mask = np.zeros((32, 32), bool)
        cy, cx = rng.integers(10, 22, size=2)
        mask[cy - 6 : cy + 6, cx - 6 : cx + 6] = True
        img = np.stack([np.full((32, 32), _red(k)), 40 + 160 * mask, np.full((32, 32), 128)], axis=-1)
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"case{k:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"case{k:02d}.png")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of 3 unlabelled RGB images (other size than the dataset's), red ``FOLDER_VALUE``."""
    root = tmp_path / "extra"
    root.mkdir()
    for k in range(3):
        img = np.stack([np.full((40, 40), FOLDER_VALUE), np.full((40, 40), 30 * k), np.full((40, 40), 9)], axis=-1)
        Image.fromarray(img.astype(np.uint8)).save(root / f"extra{k}.png")
    return root


class Recorder(SupervisedSegmentation):
    """Supervised segmentation that records every training batch; ``unlabelled`` sets ``uses_unlabelled`` per
    instance (as a system whose options decide it)."""

    seen: ClassVar[list[dict[str, Tensor]]] = []

    @classmethod
    def for_run(
        cls, plan: Plan, cfg: FinetuneConfig, *, seed: int = 0, unlabelled: bool = True
    ) -> SupervisedSegmentation:
        """Args: unlabelled: whether the system trains on unlabelled images."""
        system = super().for_run(plan, cfg, seed=seed)
        system.uses_unlabelled = unlabelled
        return system

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        Recorder.seen.append({k: v.detach().clone() for k, v in batch.items()})
        return super().training_step(batch, step)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    table = {**registry.table("segmentation")}
    registry.insert(table, "segmentation", "recorder", Recorder, "records its batches")
    monkeypatch.setitem(registry._OBJECTS, "segmentation", table)
    Recorder.seen = []
    return Recorder


def _finetune(data: Path, run: Path, *, steps: int, uses: bool = True, **options: Any) -> list[dict[str, Tensor]]:
    """Fine-tune the recorder (``uses``: its ``uses_unlabelled``); the batches it saw."""
    Recorder.seen = []
    api.finetune(
        data, run, max_steps=steps, quiet=True, system="recorder", system_options={"unlabelled": uses},
        **{**SETTINGS, **options},
    )  # fmt: skip
    return Recorder.seen


def test_unlabelled_patches_come_only_from_the_training_cases_whose_labels_are_not_used(
    coded: Path, tmp_path: Path, recorder: type[Recorder]
) -> None:
    run = tmp_path / "run"
    batches = _finetune(coded, run, steps=10, label_fraction=0.3)
    split = json.loads((run / "split.json").read_text())
    pool = set(split["train"]) - set(split["train_labelled"])
    assert split["train_unlabelled"] == sorted(pool) and len(pool) == 4
    assert not pool & {*split["val"], *split["test"]}
    assert len(batches) == 10
    drawn: set[int] = set()
    for batch in batches:
        assert batch["unlabelled"].shape == batch["image"].shape == (2, 3, 16, 16)  # B labelled + B unlabelled
        assert _ids(_cases_of(batch["image"])) <= set(split["train_labelled"])
        drawn |= _cases_of(batch["unlabelled"])
    assert _ids(drawn) <= pool, "an unlabelled patch came from a labelled, validation or test case"
    assert len(drawn) > 1, "the whole pool is drawn from"


def test_a_folder_of_images_joins_the_pool_and_is_recorded(
    coded: Path, folder: Path, tmp_path: Path, recorder: type[Recorder]
) -> None:
    run = tmp_path / "run"
    batches = _finetune(coded, run, steps=4, unlabelled=str(folder))
    assert all(_cases_of(b["unlabelled"]) == {-1} for b in batches), "label_fraction 1: only the folder's images"
    command = json.loads((run / "command.json").read_text())
    assert command["unlabelled_images"] == ["extra0", "extra1", "extra2"]
    assert json.loads((run / "split.json").read_text())["train_unlabelled"] == []

    both = _finetune(coded, tmp_path / "both", steps=10, label_fraction=0.3, unlabelled=str(folder))
    drawn = set().union(*(_cases_of(b["unlabelled"]) for b in both))
    assert -1 in drawn and len(drawn) > 1


def _old_stream(data: Path, run: Path, n_batches: int) -> list[dict[str, Tensor]]:
    """The batches of the code before unlabelled images: one ``PatchDataset`` of the labelled training cases,
    built as ``FinetuneRecipe.datasets`` built it, reseeded for rank 0 of seed 0."""
    plan = Plan.load(run / "plan.json")
    labelled = json.loads((run / "split.json").read_text())["train_labelled"]
    index = discover(data)
    cases = [load_checked_case(c, index) for c in index.cases if c.case_id in labelled]
    x, y = [preprocess_image(c.image, c.meta, plan) for c in cases], [encode_target(c, plan) for c in cases]
    stream = PatchDataset(
        x, y, plan.patch_size, 4, foreground_fraction=0.33, slice_axis=plan.slice_axis, flip_axes=[],
        intensity_probability=0.0, seed=0,
    )  # fmt: skip
    stream.reseed(0)
    items = [stream[i] for i in range(n_batches * 2)]
    return [{k: torch.stack([it[k] for it in items[i : i + 2]]) for k in items[0]} for i in range(0, len(items), 2)]


def test_the_labelled_stream_is_todays_with_or_without_unlabelled_images(
    coded: Path, tmp_path: Path, recorder: type[Recorder]
) -> None:
    without = _finetune(coded, tmp_path / "without", steps=4, uses=False, label_fraction=0.5)
    old = _old_stream(coded, tmp_path / "without", 4)
    assert [sorted(b) for b in without] == [["image", "target"]] * 4, "no unlabelled field, no extra draw"
    for got, want in zip(without, old, strict=True):
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["target"], want["target"])
    # its own stream: a system that also reads unlabelled patches trains on the same labelled ones
    with_ = _finetune(coded, tmp_path / "with", steps=4, label_fraction=0.5)
    for got, want in zip(with_, old, strict=True):
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["target"], want["target"])


def test_a_system_without_unlabelled_images_warns_that_the_folder_is_ignored(
    coded: Path, folder: Path, tmp_path: Path, recorder: type[Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    batches = _finetune(coded, tmp_path / "run", steps=1, uses=False, unlabelled=str(folder))
    assert "unlabelled" not in batches[0]
    assert "is ignored" in capsys.readouterr().err


def test_no_unlabelled_image_is_refused_saying_how_to_give_some(
    coded: Path, tmp_path: Path, recorder: type[Recorder]
) -> None:
    with pytest.raises(MedsslError, match=r"has none: use --label-fraction below 1 .* --set unlabelled=DIR") as err:
        _finetune(coded, tmp_path / "run", steps=1)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()


def _grey_folder(root: Path) -> Path:
    root.mkdir()
    Image.fromarray(np.full((32, 32), 99, np.uint8)).save(root / "grey.png")
    return root


def _volume_folder(root: Path) -> Path:
    root.mkdir()
    nib.save(nib.Nifti1Image(np.ones((3, 32, 32), np.float32), np.eye(4)), root / "vol.nii.gz")
    return root


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp, data: tmp / "missing", "does not exist"),
        (lambda tmp, data: _grey_folder(tmp / "grey"), r"grey has 1 channel\(s\) and is 2D, but .* have 3 channel"),
        (lambda tmp, data: _volume_folder(tmp / "vols"), r"vol .* is 3D, but .* are 2D"),
        (lambda tmp, data: data / "images", "validation or test image"),
    ],
    ids=["missing", "channels", "dimensionality", "held-out images"],
)
def test_a_bad_unlabelled_folder_is_refused_before_the_run_folder(
    coded: Path, tmp_path: Path, recorder: type[Recorder], make: Any, message: str
) -> None:
    bad = make(tmp_path, coded)
    with pytest.raises(MedsslError, match=message):
        _finetune(coded, tmp_path / "run", steps=1, label_fraction=0.3, unlabelled=str(bad))
    assert not (tmp_path / "run").exists()


def test_resume_continues_the_unlabelled_stream(coded: Path, tmp_path: Path, recorder: type[Recorder]) -> None:
    whole = _finetune(coded, tmp_path / "whole", steps=4, label_fraction=0.3)
    first = _finetune(coded, tmp_path / "cut", steps=2, label_fraction=0.3)
    assert all(torch.equal(a["unlabelled"], b["unlabelled"]) for a, b in zip(first, whole[:2], strict=True))
    rest = _finetune(coded, tmp_path / "cut", steps=4, label_fraction=0.3, resume=True)
    assert len(rest) == 2
    for got, want in zip(rest, whole[2:], strict=True):
        assert torch.equal(got["unlabelled"], want["unlabelled"]) and torch.equal(got["image"], want["image"])


def test_each_rank_reseeds_both_streams() -> None:
    images = [np.random.default_rng(k).normal(size=(1, 20, 20)).astype(np.float32) for k in range(3)]
    targets = [(im > 0).astype(np.uint8) for im in images]
    pool = [np.random.default_rng(10 + k).normal(size=(1, 20, 20)).astype(np.float32) for k in range(3)]
    patches = WithUnlabelledPatches(images, targets, [8, 8], 4, unlabelled=pool, seed=0)
    patches.reseed(1001)
    alone = PatchDataset(pool, None, [8, 8], 4, foreground_fraction=0.0, seed=unlabelled_seed(1001))
    labelled = PatchDataset(images, targets, [8, 8], 4, seed=1001)
    for i in range(4):
        item = patches[i]
        assert torch.equal(item["unlabelled"], alone[i]["image"])
        assert torch.equal(item["image"], labelled[i]["image"])
    patches.reseed(1000)
    other = PatchDataset(pool, None, [8, 8], 4, foreground_fraction=0.0, seed=unlabelled_seed(1001))
    assert not all(torch.equal(patches[i]["unlabelled"], other[i]["image"]) for i in range(4))
    with pytest.raises(ValueError, match="no unlabelled image"):
        WithUnlabelledPatches(images, targets, [8, 8], 4, unlabelled=[])


@pytest.mark.parametrize("n", [5, 10])
def test_label_fraction_n_over_train_gives_n_labelled_cases(n: int) -> None:
    """The benchmark's N labelled images: label_fraction (N - 0.5) / len(train) is exact whatever float rounding
    does (N / len(train) is exact for the 140 training cases of 200 with the default fractions)."""
    ids = [f"c{i:03d}" for i in range(200)]
    train = make_split(ids, test_fraction=0.2, val_fraction=0.1)["train"]
    for fraction in (n / len(train), (n - 0.5) / len(train)):
        split = make_split(ids, test_fraction=0.2, val_fraction=0.1, label_fraction=fraction, seed=2)
        assert len(split["train_labelled"]) == n and split["train"] == train
    for size in range(n, 300):
        cases = [f"c{i:03d}" for i in range(size)]
        split = make_split(cases, test_fraction=0.0, val_fraction=0.0, label_fraction=(n - 0.5) / size)
        assert len(split["train_labelled"]) == n

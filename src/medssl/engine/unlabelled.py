"""Where a system that trains on unlabelled images (``System.uses_unlabelled``) gets them in ``medssl finetune``:
the training cases whose labels the run does not use, and the images of the ``unlabelled`` folder option."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medssl.data.loading import LoadedCase
from medssl.engine.pretraining import read_images
from medssl.engine.run import Progress
from medssl.errors import MedsslError

__all__ = ["read_unlabelled_folder", "unlabelled_cases"]


def unlabelled_cases(split: dict[str, Any], source: str | Path | None) -> list[str]:
    """The training cases whose labels the run does not use (``train`` without ``train_labelled``): the unlabelled
    images of a system that trains on some. A split file may list them as ``train_unlabelled``, but only these."""
    labelled = set(split["train_labelled"])
    cases = sorted(i for i in split.get("train", []) if i not in labelled)
    given = split.get("train_unlabelled")
    if given is not None and (not isinstance(given, list) or sorted(given) != cases):
        raise MedsslError(
            f"split file {source}: train_unlabelled must list the train cases that are not in train_labelled "
            "(or be left out)"
        )
    return cases


def read_unlabelled_folder(
    folder: str | Path,
    data: str | Path,
    reference: LoadedCase,
    held_out: Sequence[Path],
    *,
    skip_bad_cases: bool,
    progress: Progress,
) -> tuple[list[LoadedCase], dict[str, list[str]]]:
    """Read and check the images of ``folder`` as ``medssl pretrain`` does: ``(images, skipped cases)``.

    Raises:
        MedsslError: an image with another channel count or dimensionality than ``reference`` (an image of
            ``data``), or one of the dataset's validation and test images (``held_out``: their files).
    """
    index, images, skipped = read_images(folder, skip_bad_cases=skip_bad_cases, progress=progress)
    channels, dims = reference.image.shape[0], reference.image.ndim - 1
    for image in images:
        if image.image.shape[0] != channels or image.image.ndim - 1 != dims:
            raise MedsslError(
                f"unlabelled={folder}: image {image.case_id} has {image.image.shape[0]} channel(s) and is "
                f"{image.image.ndim - 1}D, but the images of {data} have {channels} channel(s) and are {dims}D"
            )
    forbidden = {p.resolve() for p in held_out}
    used = {c.case_id for c in images}
    leaked = [
        c.case_id
        for c in [*index.cases, *index.test_cases]
        if c.case_id in used and forbidden & {p.resolve() for p in c.images}
    ]
    if leaked:
        raise MedsslError(
            f"unlabelled={folder} holds {len(leaked)} validation or test image(s) of {data} "
            f"({', '.join(leaked[:5])}): give a folder without them"
        )
    return images, skipped

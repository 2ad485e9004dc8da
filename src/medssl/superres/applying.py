"""Applying a trained super-resolution run to volumes (``medssl superres apply``), with the right geometry.

Each input (any format ``medssl.data.io.read_image`` reads) is normalised as in training (``normalise``), every
slice along the slicing axis (the run's rule, resolved for the input: ``resolve_axis``) is super-resolved in
batches, the output is clipped to [0, 1] and mapped back to the input's units (``denormalise``; with
``normalised=True`` it stays on the [0, 1] range the metrics use). It is written as NIfTI, ``<stem>.nii.gz``.

Geometry (``super_resolved_meta``): the two in-plane axes get ``spacing / s``; the slicing axis is unchanged.
Low-resolution voxel ``j`` covers high-resolution voxels ``s j .. s j + s - 1`` (the degradation's convention,
``align_corners=False``), so its centre is at high-resolution index ``s j + (s - 1) / 2``. With ``world = origin +
direction @ (spacing * index)``, equating the world positions of the two::

    origin_HR + D (spacing_LR / s) (s j + (s - 1) / 2) = origin_LR + D spacing_LR j
    =>  origin_HR = origin_LR - D (spacing_LR (s - 1) / (2 s))     (the in-plane axes only)

i.e. the first high-resolution voxel lies ``(s - 1) / (2 s)`` of a low-resolution voxel before the first
low-resolution centre, along each in-plane axis, whatever the direction cosines (oblique included).

A 3D model (``model.json`` ``"dims": 3``) super-resolves the whole volume along all three axes, tile by tile
(``medssl.superres.volumes3d.super_resolve_volume``); the same geometry then applies to every axis (``axis=None``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from medssl.data.geometry import ImageMeta
from medssl.data.io import read_image, stem, write_image
from medssl.data.layouts.inputs import discover_inputs
from medssl.engine.run_folder import prepare_output_dir, progress_bar
from medssl.errors import MedsslError
from medssl.superres.system import SuperResolution, build, denormalise, intensity_window, normalise
from medssl.superres.volumes3d import super_resolve_volume
from medssl.superres.workflow import resolve_axis

__all__ = ["apply", "load_model", "super_resolve", "super_resolved_meta"]


def super_resolved_meta(meta: ImageMeta, scale: int, axis: int | None) -> ImageMeta:
    """The geometry of the super-resolved volume: in-plane spacing / ``scale`` and the origin derived in the
    module docstring (direction unchanged; the shape is ``scale`` times larger in-plane).

    Args:
        meta: the low-resolution volume's geometry (3D).
        scale: the integer factor.
        axis: the slicing axis (unchanged); None: a 3D model's output, every axis super-resolved.

    Returns:
        The high-resolution ``ImageMeta``.
    """
    spacing = np.asarray(meta.spacing, dtype=float)
    inplane = np.array([axis is None or a != axis for a in range(meta.ndim)])
    shift = np.where(inplane, spacing * (scale - 1) / (2 * scale), 0.0)
    origin = np.asarray(meta.origin, dtype=float) - np.asarray(meta.direction, dtype=float) @ shift
    return replace(
        meta,
        spacing=tuple(float(s) for s in np.where(inplane, spacing / scale, spacing)),
        origin=tuple(float(o) for o in origin),
        shape=tuple(int(n * scale) if inplane[a] else int(n) for a, n in enumerate(meta.shape)),
        format="nifti",
        extra=dict(meta.extra),
    )


def load_model(run: str | Path) -> tuple[SuperResolution, dict[str, Any]]:
    """The trained system of a ``medssl superres train`` run folder and its ``model.json``.

    Raises:
        MedsslError: a missing folder, or one that holds no finished super-resolution run.
    """
    folder = Path(run)
    if not folder.is_dir():
        raise MedsslError(f"--model {folder} does not exist: give the run folder of `medssl superres train`")
    if not (folder / "model.json").is_file() or not (folder / "network.pt").is_file():
        raise MedsslError(
            f"--model {folder} holds no trained super-resolution model (model.json, network.pt): give the run folder "
            "of a finished `medssl superres train` (or --resume the run)"
        )
    model = json.loads((folder / "model.json").read_text())
    dims = int(model.get("dims", 2))  # runs made before the 3D option are 2D
    system = build(model["system"], int(model["scale"]), dict(model["system_options"]), spatial_dims=dims)
    state = torch.load(folder / "network.pt", map_location="cpu", weights_only=True)
    system.network.load_state_dict(state)
    return system.eval(), model


def super_resolve(
    system: SuperResolution,
    volume: npt.NDArray[np.floating],
    axis: int,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    progress: Callable[[Iterable[Any], str], Iterable[Any]] | None = None,
) -> npt.NDArray[np.float32]:
    """Super-resolve every slice of a normalised 3D ``volume`` along ``axis`` (in-plane axes x ``system.scale``).

    Args:
        system: the trained system (in eval mode).
        volume: ``(X, Y, Z)`` normalised to [0, 1].
        axis: the slicing axis.
        batch_size: slices per forward pass.
        device: where the network runs.
        progress: ``wrap(items, what)`` progress bar.

    Returns:
        The super-resolved volume on [0, 1], float32, the slicing axis in its place.
    """
    slices = np.moveaxis(np.asarray(volume, dtype=np.float32), axis, 0)
    starts: Iterable[Any] = range(0, slices.shape[0], batch_size)
    if progress is not None:
        starts = progress(list(starts), "super-resolving slices")
    network = system.to(device)
    out = []
    with torch.no_grad():
        for start in starts:
            batch = torch.from_numpy(np.ascontiguousarray(slices[start : start + batch_size]))[:, None].to(device)
            out.append(network.predict(batch)[:, 0].cpu().numpy())
    return np.moveaxis(np.concatenate(out, axis=0), 0, axis)


def _super_resolve(
    system: SuperResolution,
    info: dict[str, Any],
    volume: npt.NDArray[np.float32],
    axis: int | None,
    spacing: tuple[float, ...],
    *,
    batch_size: int,
    tile: int,
    device: str,
    progress: Callable[[Iterable[Any], str], Iterable[Any]],
) -> tuple[int | None, npt.NDArray[np.float32]]:
    """``(slicing axis, result)``: slice by slice for a 2D model, tile by tile (axis None) for a 3D one."""
    if int(info.get("dims", 2)) == 3:
        network = system.to(device)
        return None, super_resolve_volume(
            network.predict, volume, system.scale, tile=tile, device=device, progress=progress
        )
    slicing = resolve_axis(info["axis"] if axis is None else axis, spacing)
    return slicing, super_resolve(system, volume, slicing, batch_size=batch_size, device=device, progress=progress)


def apply(
    model: str | Path,
    input: str | Path,
    out: str | Path,
    *,
    axis: int | None = None,
    batch_size: int = 16,
    tile: int = 32,
    normalised: bool = False,
    device: str = "cpu",
    overwrite: bool = False,
    quiet: bool = False,
) -> list[Path]:
    """Super-resolve each volume of ``input`` with the run ``model``; write ``out/<stem>.nii.gz``.

    Args:
        model: the run folder of ``medssl superres train``.
        input: a volume file, a DICOM series folder, or a folder of them.
        out: the output folder (created; an existing one needs ``overwrite``).
        axis: the slicing axis (none for a 3D model); None: the run's rule (``"auto"``: largest spacing).
        batch_size: slices per forward pass (2D models).
        tile: a 3D model's tile side, in input voxels (see ``super_resolve_volume``).
        normalised: write the [0, 1] range the metrics use instead of the input's units.
        device: ``cpu`` or ``cuda``.
        overwrite: replace an earlier output folder of this command.
        quiet: no progress bars.

    Returns:
        The written files, in input order.

    Raises:
        MedsslError: a missing or unfinished run or input, an input that is not 3D, an ``axis`` for a 3D model.
    """
    system, info = load_model(model)
    if int(info.get("dims", 2)) == 3 and axis is not None:
        raise MedsslError("--axis does not apply to a 3D model: it super-resolves all three axes")
    inputs = discover_inputs(input)
    scale = int(info["scale"])
    progress = progress_bar(quiet)
    folder = prepare_output_dir(out, kind="superres-apply", overwrite=overwrite, inputs=(model, input))
    written = []
    for path in inputs:
        image, meta = read_image(path)
        if meta.ndim != 3:
            raise MedsslError(
                f"{path} is a {meta.ndim}D image: this model super-resolves the slices of 3D volumes (give a volume)"
            )
        channel = min(int(info.get("channel", 0)), image.shape[0] - 1)
        window = intensity_window(image[channel])
        slicing, result = _super_resolve(
            system,
            info,
            normalise(image[channel], window),
            axis,
            meta.spacing,
            batch_size=batch_size,
            tile=tile,
            device=device,
            progress=progress,
        )
        values = result if normalised else denormalise(result, window)
        target = folder / f"{stem(path)}.nii.gz"
        write_image(target, values, super_resolved_meta(meta, scale, slicing))
        written.append(target)
    return written

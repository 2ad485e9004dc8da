"""The MONAI peer of ``speed_peers.py``: a ``DynUNet`` matched to medssl's U-Net, trained by a plain PyTorch loop
on MONAI's dictionary transforms (as MONAI's tutorials train), and whole images predicted from file to written
file with ``LoadImage`` / ``SlidingWindowInferer`` / ``Invertd`` / ``SaveImage``.

Every function takes the medssl plan (``plan.json`` of the run that medssl trains, as a dict), so that both sides
see the same target spacing, patch size, batch size, widths and classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


def matched_dynunet(spatial_dims: int, in_channels: int, out_channels: int, channels: list[int]) -> nn.Module:
    """MONAI's ``DynUNet`` laid out as medssl's ``build_unet``: per scale two conv 3 - instance norm (affine) -
    leaky ReLU (0.01) units, strides 1, 2, 2, ..., transposed-conv upsampling, no residual blocks, no deep
    supervision. ``(B, in_channels, *S) -> (B, out_channels, *S)``."""
    from monai.networks.nets import DynUNet

    n = len(channels)
    return DynUNet(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=[3] * n,
        strides=[1] + [2] * (n - 1),
        upsample_kernel_size=[2] * (n - 1),
        filters=list(channels),
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
        res_block=False,
    )


def network_for(plan: dict[str, Any]) -> nn.Module:
    """The ``DynUNet`` matched to the U-Net of ``plan`` (seeded: the same weights in every process)."""
    torch.manual_seed(0)
    out = len(plan["class_names"]) if plan["task"] == "multilabel" else len(plan["class_values"])
    return matched_dynunet(plan["spatial_dims"], plan["in_channels"], out, plan["channels"])


def training_files(data: Path, plan: dict[str, Any], ids: list[str]) -> list[dict[str, str]]:
    """One dict per training case: ``image`` and ``label`` (a label map, Decathlon layout) or one mask per
    structure (``images/`` + ``masks/<structure>/``, JSRT)."""
    if plan["task"] == "multilabel":
        return [
            {"image": str(data / "images" / f"{i}.png")}
            | {s: str(data / "masks" / s / f"{i}.png") for s in plan["class_names"]}
            for i in ids
        ]
    return [
        {"image": str(data / "imagesTr" / f"{i}.nii.gz"), "label": str(data / "labelsTr" / f"{i}.nii.gz")} for i in ids
    ]


def _binary(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).float()


def cached_transforms(plan: dict[str, Any]) -> list[Any]:
    """The deterministic part, run once by ``CacheDataset``: load, channel first, stack the structure masks,
    resample to the plan's spacing, z-score, pad to the patch, foreground/background indices for the crop."""
    from monai import transforms as T

    multilabel = plan["task"] == "multilabel"
    structures = list(plan["class_names"]) if multilabel else []
    keys = ["image", *structures] if multilabel else ["image", "label"]
    steps: list[Any] = [T.LoadImaged(keys, image_only=True), T.EnsureChannelFirstd(keys)]
    if multilabel:
        steps += [T.ConcatItemsd(structures, "label"), T.DeleteItemsd(structures), T.Lambdad("label", _binary)]
    if plan.get("target_spacing"):
        steps.append(T.Spacingd(["image", "label"], plan["target_spacing"], mode=("bilinear", "nearest")))
    steps += [
        T.NormalizeIntensityd("image"),
        T.SpatialPadd(["image", "label"], plan["patch_size"]),
        T.FgBgToIndicesd("label"),
    ]
    return steps


def random_transforms(plan: dict[str, Any]) -> list[Any]:
    """The per-step part, medssl's augmentation in MONAI's transforms: a crop centred on foreground one time in
    three (``pos=1, neg=2``), a random affine with probability 0.3 (rotation up to 15 degrees, zoom 0.85-1.2),
    intensity scale and shift with probability 0.3, Gaussian noise with probability 0.15."""
    from monai import transforms as T

    patch, dims = plan["patch_size"], plan["spatial_dims"]
    both = ["image", "label"]
    angle = math.radians(15.0)
    fg, bg = "label_fg_indices", "label_bg_indices"  # FgBgToIndicesd's keys
    crop = T.RandCropByPosNegLabeld(both, "label", patch, 1, 2, 1, fg_indices_key=fg, bg_indices_key=bg)
    affine = T.RandAffined(
        both, patch, prob=0.3, rotate_range=[angle] * (1 if dims == 2 else 3), scale_range=[(-0.15, 0.2)] * dims,
        mode=("bilinear", "nearest"), padding_mode="zeros", cache_grid=True,
    )  # fmt: skip
    return [
        crop,
        T.DeleteItemsd([fg, bg]),
        affine,
        T.RandScaleIntensityd("image", factors=0.25, prob=0.3),
        T.RandShiftIntensityd("image", offsets=0.1, prob=0.3),
        T.RandGaussianNoised("image", prob=0.15, std=0.1),
    ]


def loss_for(plan: dict[str, Any]) -> nn.Module:
    """medssl's loss: Dice + cross-entropy over the batch (softmax, label map) or sigmoid Dice + binary
    cross-entropy (overlapping structures; MONAI's ``DiceCELoss`` would take a softmax cross-entropy there)."""
    from monai.losses import DiceCELoss, DiceLoss

    if plan["task"] != "multilabel":
        return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    dice, bce = DiceLoss(sigmoid=True, batch=True), nn.BCEWithLogitsLoss()
    return _Sum(dice, bce)


class _Sum(nn.Module):
    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum((loss(logits, target) for loss in self.losses), torch.zeros(()))


def _batches(loader: Any) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def train(
    data: Path, plan: dict[str, Any], ids: list[str], total: int, bf16: bool, seed: int = 0, save: Path | None = None
) -> list[float]:
    """``total`` steps of the plain loop; the ``perf_counter`` after every step (index 0: before the first), the
    loader's next batch inside each step. The cache is filled before the first stamp. ``seed`` fixes the crops,
    augmentation and shuffling; ``save``: where to write the trained weights (a ``state_dict``)."""
    from monai.data import CacheDataset, DataLoader, set_track_meta
    from monai.transforms import Compose
    from monai.utils import set_determinism

    set_determinism(seed)
    dataset = CacheDataset(
        training_files(data, plan, ids),
        Compose(cached_transforms(plan) + random_transforms(plan)).set_random_state(seed),
        cache_rate=1.0,
        num_workers=0,
        progress=False,
    )
    set_track_meta(False)  # plain tensors from here on, as MONAI's fast-training tutorial does
    loader = DataLoader(dataset, batch_size=plan["batch_size"], shuffle=True, num_workers=0)
    net, loss_fn = network_for(plan), loss_for(plan)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=total, power=0.9)
    net.train()
    batches = _batches(loader)
    stamps = [time.perf_counter()]
    for _ in range(total):
        batch = next(batches)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(batch["image"]), batch["label"])
        loss.backward()
        opt.step()
        schedule.step()
        stamps.append(time.perf_counter())
    if save is not None:
        torch.save(net.state_dict(), save)
    return stamps


def _pre(plan: dict[str, Any]) -> Any:
    from monai import transforms as T

    steps: list[Any] = [T.LoadImaged("image", image_only=True), T.EnsureChannelFirstd("image")]
    if plan.get("target_spacing"):
        steps.append(T.Spacingd("image", plan["target_spacing"], mode="bilinear"))
    return T.Compose([*steps, T.NormalizeIntensityd("image")])


def _post(plan: dict[str, Any], pre: Any) -> Any:
    from monai import transforms as T

    multilabel = plan["task"] == "multilabel"
    return T.Compose(
        [
            T.Activationsd("pred", sigmoid=multilabel, softmax=not multilabel),
            T.Invertd("pred", pre, orig_keys="image", nearest_interp=False),  # back onto the input's grid
            T.AsDiscreted("pred", threshold=0.5) if multilabel else T.AsDiscreted("pred", argmax=True),
        ]
    )


def predictor(plan: dict[str, Any], weights: Path | None = None) -> Any:
    """A function ``path, out_dir -> None`` that predicts one image file and writes its label map (one PNG per
    structure, 0/255, under ``out_dir/<structure>/``; else a NIfTI label map), as ``medssl predict`` writes.
    ``weights``: a ``state_dict`` that ``train`` saved (else the seeded initial network: timing only)."""
    from monai.data import set_track_meta
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import SaveImage

    set_track_meta(True)  # Invertd and SaveImage need the image's geometry

    net = network_for(plan)
    if weights is not None:
        net.load_state_dict(torch.load(weights, map_location="cpu"))
    net.eval()
    inferer = SlidingWindowInferer(plan["patch_size"], sw_batch_size=4, overlap=0.25, mode="gaussian")
    pre = _pre(plan)
    post = _post(plan, pre)
    multilabel = plan["task"] == "multilabel"

    def save(pred: Any, folder: Path) -> None:
        ext, scale = (".png", 255) if multilabel else (".nii.gz", None)
        SaveImage(folder, output_postfix="", output_ext=ext, output_dtype="uint8", scale=scale, separate_folder=False,
                  print_log=False)(pred)  # fmt: skip

    def predict(path: Path, out_dir: Path) -> None:
        item = pre({"image": str(path)})
        with torch.no_grad():
            item["pred"] = inferer(item["image"][None], net)[0]
        pred = post(item)["pred"]
        if multilabel:
            for s, structure in enumerate(plan["class_names"]):
                save(pred[s : s + 1], out_dir / structure)
        else:
            save(pred, out_dir)

    return predict

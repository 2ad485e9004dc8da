"""Saving and loading encoder weights: the file that pretraining exports and fine-tuning ``--init`` loads.

CONTRACT (implemented by the networks helper):

File format (a ``torch.save`` of plain types only, so ``torch.load(weights_only=True)`` reads it):
``{"format": "medssl-encoder", "version": 1, "encoder": "<class name>", "spatial_dims": int,
"in_channels": int, "channels": [int, ...], "state_dict": {name: tensor}}``.

``save_encoder(encoder, path, extra: dict | None = None)``: atomic write (temp file + rename).

``load_encoder(encoder, path) -> int``: loads the state dict into ``encoder`` and returns the number of
tensors loaded. Also accepts (a) a medssl run checkpoint (Lightning ``.ckpt`` whose ``state_dict`` has keys
``model.encoder.*`` for a fine-tuning run, ``method.encoder.*`` for a pretraining run), (b) a plain state dict
whose keys match the encoder directly or after stripping a common prefix (``encoder.``, ``model.encoder.``,
``module.``). Refuses with ``MedsslError`` (naming the file and the first offending tensors) when: the file is
missing, not a torch file, corrupt, needs pickled code (weights_only refuses it), no key matches, a matching key
has another shape, or the encoder has tensors the file lacks. Never silently skips.

``load_checkpoint_file(path) -> dict``: ``torch.load(path, map_location="cpu", weights_only=True)`` with the
clear errors above (shared by everything that reads checkpoints).

Implementation notes: ``extra`` is stored under the key ``"extra"`` and must hold plain types only (dict, list,
tuple, str, int, float, bool, None, tensors), so the file stays loadable with ``weights_only=True``. The count
returned by ``load_encoder`` is ``len(encoder.state_dict())`` (parameters and buffers). Extra tensors under the
encoder's prefix are refused for an encoder file and for keys found under an ``...encoder.`` prefix; a whole-model
state dict matched directly (or after ``module.``/``model.``) may carry other tensors (decoder, head).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medssl.errors import MedsslError
from medssl.networks.encoders import Encoder

__all__ = ["ENCODER_FORMAT", "ENCODER_FORMAT_VERSION", "load_checkpoint_file", "load_encoder", "save_encoder"]

ENCODER_FORMAT = "medssl-encoder"
ENCODER_FORMAT_VERSION = 1
# Prefixes tried when matching a state dict to an encoder; the one matching the most encoder keys wins.
# "method.encoder.": a pretraining run's checkpoint, where the method's online encoder (the one exported to
# encoder.pt) lives; its momentum copy sits under "method.target_encoder." and never matches.
_PREFIXES = (
    "",
    "encoder.",
    "model.encoder.",
    "method.encoder.",
    "module.",
    "module.encoder.",
    "model.",
    "net.encoder.",
)
# Containers in which training scripts commonly nest a model's state dict.
_STATE_DICT_KEYS = ("state_dict", "model_state_dict")
_PLAIN_SCALARS = (str, int, float, bool, type(None), Tensor)
_MAX_LISTED = 5


def _listed(keys: Iterable[str]) -> str:
    """The first few keys (sorted) for an error message, with a count of the rest."""
    keys = sorted(keys)
    head = ", ".join(keys[:_MAX_LISTED])
    return head + (f" (and {len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _check_plain(value: Any, where: str) -> None:
    """Raise ``MedsslError`` unless ``value`` is built from types that ``weights_only`` loading accepts."""
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise MedsslError(f"{where}: key {key!r} must be a str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    raise MedsslError(f"{where}: {type(value).__name__} cannot be saved (only plain types and tensors)")


def save_encoder(encoder: Encoder, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Write ``encoder``'s weights as a medssl encoder file, atomically (temp file, then rename).

    Args:
        encoder: the encoder to save (tensors are copied to CPU).
        path: destination file; parent folders are created.
        extra: optional plain-typed metadata (e.g. the pretraining method), stored under ``"extra"``.

    Returns:
        The path written.
    """
    path = Path(path)
    if extra is not None:
        _check_plain(extra, "extra")
    payload: dict[str, Any] = {
        "format": ENCODER_FORMAT,
        "version": ENCODER_FORMAT_VERSION,
        "encoder": type(encoder).__name__,
        "spatial_dims": int(encoder.spatial_dims),
        "in_channels": int(encoder.in_channels),
        "channels": [int(c) for c in encoder.channels],
        "state_dict": {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
    }
    if extra is not None:
        payload["extra"] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        # Only left behind if the save or the rename failed.
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` that fails with a clear ``MedsslError``.

    Raises:
        MedsslError: the file is missing, is not a torch file, is corrupt, contains pickled code or objects that
            ``weights_only`` refuses, or does not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MedsslError(f"checkpoint file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise MedsslError(f"cannot read {path}: the file is empty (an interrupted save?)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = _load_failure_reason(exc)
        if reason.startswith("Unsupported global"):
            raise MedsslError(
                f"refusing to load {path}: it contains pickled code or custom objects, not only tensors and plain "
                f"types ({reason}); only load files you trust, and re-save them as plain state dicts"
            ) from exc
        raise MedsslError(
            f"cannot read {path}: it is not a torch checkpoint (foreign format, or a pickle that weights-only loading "
            f"cannot read) or it is corrupt/truncated ({reason})"
        ) from exc
    if not isinstance(obj, dict):
        raise MedsslError(f"{path} holds a {type(obj).__name__}, expected a dict (a checkpoint or state dict)")
    return obj


def _load_failure_reason(exc: Exception) -> str:
    """One line saying why ``torch.load`` failed (its messages run over many lines of generic advice)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        # The useful part follows the marker; the text before it is generic advice about weights_only.
        text = text[text.index(marker) + len(marker) :]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line.split(" Please use ")[0].split(" This is an internal")[0]
    if line.startswith("Unsupported global"):
        return line
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _extract_state_dict(obj: dict[str, Any], path: Path) -> tuple[dict[str, Tensor], bool]:
    """The tensors in a loaded file and whether the file claims to be a medssl encoder file."""
    if obj.get("format") == ENCODER_FORMAT:
        version = obj.get("version")
        if not isinstance(version, int) or version > ENCODER_FORMAT_VERSION:
            raise MedsslError(
                f"{path} is a medssl encoder file of version {version!r}; this medssl reads up to version "
                f"{ENCODER_FORMAT_VERSION} (upgrade medssl)"
            )
        sd = obj.get("state_dict")
        if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
            raise MedsslError(f"{path} claims to be a medssl encoder file but has no valid 'state_dict'")
        return dict(sd), True
    for key in _STATE_DICT_KEYS:
        if _is_state_dict(obj.get(key)):
            return dict(obj[key]), False
    if _is_state_dict(obj):
        return obj, False
    raise MedsslError(
        f"{path} holds no state dict: expected a medssl encoder file, a checkpoint with a 'state_dict', or a dict "
        f"of tensors (top-level keys: {_listed(map(str, obj))})"
    )


def _other_prefixes(sd: Mapping[str, Tensor], wanted: set[str]) -> list[str]:
    """Prefixes (outside ``_PREFIXES``) under which the file has keys ending in encoder key names, for hints only.

    Never used to load: a file may hold several encoders (e.g. student and teacher), so guessing could pick the
    wrong one silently.
    """
    found = {k[: -len(w)] for k in sd for w in wanted if k.endswith("." + w)}
    return sorted(found)[:_MAX_LISTED]


def _check_header(obj: dict[str, Any], encoder: Encoder, path: Path) -> None:
    """Refuse an encoder file built for another architecture, dimensionality or input channel count, in plain
    words (e.g. PGL's ``--preset paper`` exports a ResNet-50, which cannot initialise a U-Net's encoder)."""
    kind = obj.get("encoder")
    if isinstance(kind, str) and kind != type(encoder).__name__:
        raise MedsslError(
            f"{path} holds a {kind}, but the model's encoder is a {type(encoder).__name__}; an encoder initialises "
            "only a network built around the same kind of encoder (pretrain with the default preset for "
            "`medssl finetune --init`)"
        )
    for field in ("spatial_dims", "in_channels"):
        have, want = obj.get(field), getattr(encoder, field)
        if have is not None and have != want:
            raise MedsslError(f"{path} holds an encoder with {field}={have}, but the model has {field}={want}")


def load_encoder(encoder: Encoder | nn.Module, path: str | os.PathLike[str]) -> int:
    """Load weights from ``path`` into ``encoder``; every encoder tensor must be present with the same shape.

    Accepts a medssl encoder file, a Lightning/medssl checkpoint (``state_dict`` with ``model.encoder.*`` keys, or a
    pretraining run's ``method.encoder.*``: its online encoder, the one in ``encoder.pt``) or a plain state dict,
    matched directly or after stripping a common prefix.

    Returns:
        The number of tensors loaded (``len(encoder.state_dict())``).

    Raises:
        MedsslError: naming the file and the first offending keys (see the module doc).
    """
    path = Path(path)
    obj = load_checkpoint_file(path)
    sd, is_encoder_file = _extract_state_dict(obj, path)
    if is_encoder_file and isinstance(encoder, Encoder):
        _check_header(obj, encoder, path)
    target = encoder.state_dict()
    wanted = set(target)
    best_prefix, best = "", 0
    for prefix in _PREFIXES:
        hits = sum(1 for k in sd if k.startswith(prefix) and k[len(prefix) :] in wanted)
        if hits > best:
            best_prefix, best = prefix, hits
    if best == 0:
        elsewhere = _other_prefixes(sd, wanted)
        hint = (
            f"; encoder-like tensors sit under {', '.join(repr(p) for p in elsewhere)} (extract those keys into a "
            "state dict, or re-save the encoder with save_encoder)"
            if elsewhere
            else ""
        )
        raise MedsslError(
            f"no tensor in {path} matches the encoder: file keys look like {_listed(list(sd)[:_MAX_LISTED])}; "
            f"the encoder expects keys like {_listed(list(target)[:_MAX_LISTED])}{hint}"
        )
    found = {k[len(best_prefix) :]: v for k, v in sd.items() if k.startswith(best_prefix)}
    where = f"{path}" + (f" (keys under '{best_prefix}')" if best_prefix else "")
    missing = wanted - set(found)
    if missing:
        raise MedsslError(f"{where} lacks {len(missing)} encoder tensor(s): {_listed(missing)}")
    mismatched = [k for k in target if tuple(found[k].shape) != tuple(target[k].shape)]
    if mismatched:
        detail = ", ".join(
            f"{k}: file {tuple(found[k].shape)} vs model {tuple(target[k].shape)}" for k in mismatched[:_MAX_LISTED]
        )
        raise MedsslError(f"{where} has {len(mismatched)} tensor(s) with another shape: {detail}")
    unexpected = set(found) - wanted
    if unexpected and (is_encoder_file or best_prefix.endswith("encoder.")):
        raise MedsslError(
            f"{where} has {len(unexpected)} encoder tensor(s) the model lacks (another architecture?): "
            f"{_listed(unexpected)}"
        )
    encoder.load_state_dict({k: found[k] for k in target}, strict=True)
    return len(target)

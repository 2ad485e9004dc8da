"""A fine-tuning run's segmentation network as an ONNX file, and prediction through ONNX Runtime.

``export_onnx(run, out)`` writes the network of the run's best checkpoint (the one ``medssl predict`` loads) with
dynamic batch and spatial axes: input ``image`` ``(B, C, *S)``, output ``logits`` ``(B, K, *S)``, 2D or 3D. The
preprocessing facts prediction needs (the run's ``plan.json``: spacing, normalisation, intensity statistics,
patch size, classes) travel inside the file as ONNX ``metadata_props`` (key ``medssl.plan``), so that
``medssl predict --model model.onnx`` needs the ``.onnx`` alone. Rater-conditioned networks (system ``mrnet``)
take the expertise vector as a second input ``expertise`` ``(B, R)``; ``--raters`` works as with torch.

``load_onnx_model`` wraps an ``onnxruntime.InferenceSession`` (CPUExecutionProvider) in a parameter-free
``nn.Module`` so that the same sliding window, activation and writing code runs for both backends: only the
network call differs. The export is legacy TorchScript tracing (``torch.onnx.export(..., dynamo=False)``; still
present in torch 2.13, deprecated) because the dynamo exporter needs the extra ``onnxscript`` package.

Needs the ``onnx`` and ``onnxruntime`` packages (``pip install onnx onnxruntime``, the ``onnx`` extra); a missing
one is one clear error at the point of use.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from medssl import __version__
from medssl.data.plan import Plan
from medssl.engine.run_folder import check_output_location
from medssl.errors import MedsslError
from medssl.segment.predict import TrainedModel, load_trained_model

INPUT = "image"
EXPERTISE = "expertise"
OUTPUT = "logits"
OPSET = 17
PLAN_KEY = "medssl.plan"
TOLERANCE = 1e-4  # largest |ORT - torch| logit difference accepted, relative to max(1, max |logit|)


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote.

    Attributes:
        path: the ``.onnx`` file.
        system: the segmentation system the run trained.
        max_difference: largest |ONNX Runtime - torch| logit on a random batch of two patches.
    """

    path: Path
    system: str
    max_difference: float


def require(module: str) -> Any:
    """Import an optional dependency, or raise one line naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MedsslError(
            f"ONNX export and prediction need the {module} package: pip install onnx onnxruntime"
        ) from None


class _Conditioned(nn.Module):
    """A rater-conditioned network as a two-input graph: ``(image, expertise (B, R))`` -> logits."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: Tensor, expertise: Tensor) -> Tensor:
        out: Tensor = self.network(image, expertise)
        return out


def stored_expertise(network: nn.Module) -> list[float] | None:
    """The stored rater-expertise vector of a network whose output depends on one chosen at prediction (``MRNet``:
    ``set_expertise`` and an ``expertise`` buffer); None for a network that maps images to logits alone."""
    vector = getattr(network, "expertise", None)
    if not hasattr(network, "set_expertise") or not isinstance(vector, Tensor):
        return None
    values: list[float] = vector.tolist()
    return values


def network_to_onnx(network: nn.Module, plan: Plan, metadata: dict[str, str] | None = None) -> bytes:
    """The ONNX model of ``network`` (eval mode) for ``plan``'s inputs, batch and spatial axes dynamic.

    Args:
        network: maps ``(B, C, *S)`` to ``(B, K, *S)`` logits (plus ``expertise (B, R)`` when conditioned).
        plan: gives the channels and the patch of the example traced.
        metadata: written into the model's ``metadata_props``.

    Returns:
        The serialised model.
    """
    onnx = require("onnx")
    network.eval()
    spatial = {2 + i: f"spatial{i}" for i in range(plan.spatial_dims)}
    example: tuple[Tensor, ...] = (torch.zeros(1, plan.in_channels, *plan.patch_size),)
    names, axes = [INPUT], {INPUT: {0: "batch", **spatial}, OUTPUT: {0: "batch", **spatial}}
    traced: nn.Module = network
    expertise = stored_expertise(network)
    if expertise is not None:
        traced = _Conditioned(network)
        example += (torch.tensor([expertise]),)
        names.append(EXPERTISE)
        axes[EXPERTISE] = {0: "batch"}
    buffer = io.BytesIO()  # a file object, as torch.onnx.export's documentation allows (its annotation does not)
    with warnings.catch_warnings():  # tracing notes on shape checks and the exporter's deprecation notice
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                traced,
                example,
                buffer,  # type: ignore[arg-type]
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT],
                dynamic_axes=axes,
                opset_version=OPSET,
            )
        except Exception as exc:  # the exporter's own classes (SymbolicValueError, RuntimeError, ...)
            raise MedsslError(
                f"the {type(network).__name__} network cannot be exported to ONNX (legacy TorchScript exporter, "
                f"opset {OPSET}): {_first_line(exc)}; predict with --backend torch"
            ) from None
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "medssl", __version__
    data: bytes = proto.SerializeToString()
    return data


def session(model: bytes | Path, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads (default: torch's, so that
    both backends use the same cores)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unrelated classes for unreadable files
        raise MedsslError(
            f"{model if isinstance(model, Path) else 'the model'} is not a valid ONNX model: {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (the exporter's and ONNX Runtime's run to pages), else its class."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class OnnxNetwork(nn.Module):
    """An ONNX Runtime session behind ``nn.Module``'s call: ``(B, C, *S)`` float tensor -> ``(B, K, *S)`` logits, so
    that ``medssl.segment.inference.predict_logits`` tiles it like the torch network. Parameter-free.

    A rater-conditioned export keeps an expertise vector (``set_expertise``, as ``MRNet``), fed for every image.
    """

    def __init__(self, inference_session: Any, expertise: list[float] | None = None) -> None:
        super().__init__()
        self.session = inference_session
        self.input_names = [i.name for i in inference_session.get_inputs()]
        self.expertise = torch.tensor(expertise) if expertise is not None else None

    def set_expertise(self, weights: list[float]) -> None:
        """The rater-expertise vector fed with every image (``medssl.segment.predict.expertise_vector``)."""
        if self.expertise is None:
            raise MedsslError("--raters needs a model trained on several raters with rater conditioning (system mrnet)")
        self.expertise = torch.tensor(weights, dtype=torch.float32)

    def forward(self, x: Tensor) -> Tensor:
        feeds = {INPUT: x.detach().to("cpu", torch.float32).contiguous().numpy()}
        if EXPERTISE in self.input_names and self.expertise is not None:
            feeds[EXPERTISE] = self.expertise.reshape(1, -1).expand(x.shape[0], -1).contiguous().numpy()
        out = self.session.run([OUTPUT], feeds)[0]
        return torch.from_numpy(out).to(x.device)


def max_difference(data: bytes, network: nn.Module, plan: Plan, threads: int | None = None, seed: int = 0) -> float:
    """Largest |ONNX Runtime - torch| logit of ``network`` and its export ``data`` on two random patches."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, plan.in_channels, *plan.patch_size, generator=generator)
    expertise = stored_expertise(network)
    with torch.no_grad():
        expected = network(x)
    got = OnnxNetwork(session(data, threads), expertise)(x)
    if got.shape != expected.shape:
        return float("inf")
    return float((got - expected).abs().max() / max(1.0, float(expected.abs().max())))


def _system_name(run: Path) -> str:
    """The run's segmentation system (``config.yaml``; ``load_trained_model`` has checked it)."""
    saved = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else None
    return str((saved or {}).get("system") or "supervised")


def _training_data(run: Path) -> str:
    """The run's ``--data`` (``command.json``), for error messages of a model used away from its run folder."""
    try:
        return str(json.loads((run / "command.json").read_text()).get("data") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _check_destination(out: Path, run: Path, overwrite: bool) -> None:
    """Refuse an output inside the run folder, one that is not a ``.onnx`` file name, or one that exists (without
    ``overwrite``, or when it is not a medssl export: ``--overwrite`` replaces only those), before the run is
    loaded."""
    check_output_location(out, (run,))  # never inside the run folder it reads
    if out.suffix != ".onnx":
        raise MedsslError(f"--out {out} must name a .onnx file")
    if out.is_dir():
        raise MedsslError(f"--out {out} is a folder; name the .onnx file to write")
    if not out.exists():
        return
    if not overwrite:
        raise MedsslError(f"{out} exists; pass --overwrite to replace it")
    try:
        ours = any(p.key == PLAN_KEY for p in require("onnx").load(str(out), load_external_data=False).metadata_props)
    except MedsslError:
        raise
    except Exception:  # not an ONNX file at all
        ours = False
    if not ours:
        raise MedsslError(f"{out} is not a medssl ONNX export; --overwrite replaces only those")


def export_onnx(run_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> OnnxExport:
    """Export the network of a fine-tuning run folder (its best checkpoint, else its last) to ``out`` (``.onnx``).

    The run's plan is stored in the file's metadata (``medssl.plan``), with the system, the source run and
    checkpoint, the training data and the medssl version; the export is checked against torch on a random batch.

    Raises:
        MedsslError: ``out`` is not a new ``.onnx`` path (or a medssl export with ``overwrite``), the run folder
            is not a fine-tuning run with a checkpoint (``load_trained_model``'s errors), onnx or onnxruntime is
            missing, or ONNX Runtime's logits differ from torch's by more than ``TOLERANCE``.
    """
    run, path = Path(run_dir), Path(out)
    _check_destination(path, run, overwrite)
    require("onnxruntime")  # checked before the run is loaded: the export is verified with it
    model = load_trained_model(run)
    system = _system_name(run)
    metadata = {
        PLAN_KEY: json.dumps(dataclasses.asdict(model.plan)),
        "medssl.system": system,
        "medssl.run": str(run.resolve()),
        "medssl.checkpoint": model.checkpoint.name,
        "medssl.data": _training_data(run),
        "medssl.version": __version__,
    }
    expertise = stored_expertise(model.network)
    if expertise is not None:
        metadata["medssl.expertise"] = json.dumps(expertise)
    data = network_to_onnx(model.network, model.plan, metadata)
    difference = _checked(data, model, f"the ONNX export of {run} ({system})", "nothing written")
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, path)  # a reader never sees half a file
    except OSError as exc:
        if partial.is_file():
            partial.unlink()
        raise MedsslError(f"cannot write {path}: {exc.strerror or exc}") from None
    return OnnxExport(path, system, difference)


def _checked(data: bytes, model: TrainedModel, what: str, consequence: str) -> float:
    """``max_difference`` of the export ``data`` and ``model``'s torch network; raises when over ``TOLERANCE``."""
    difference = max_difference(data, model.network, model.plan)
    if not difference <= TOLERANCE:
        raise MedsslError(
            f"{what} does not reproduce its logits: relative difference {difference:.2g} > {TOLERANCE:g}; {consequence}"
        )
    return difference


def load_onnx_model(model: str | Path, *, threads: int | None = None) -> TrainedModel:
    """A ``TrainedModel`` whose network runs in ONNX Runtime: from a ``medssl export`` ``.onnx`` file (its plan
    from the metadata), or from a fine-tuning run folder (exported in memory, nothing written).

    Raises:
        MedsslError: the file is missing, not ONNX, or not a medssl export (no plan); onnx (for a run folder) or
            onnxruntime is missing; a run folder's errors are ``load_trained_model``'s.
    """
    path = Path(model)
    require("onnxruntime")
    if path.is_dir():
        trained = load_trained_model(path)
        data = network_to_onnx(trained.network, trained.plan)
        _checked(data, trained, f"the ONNX export of {path}", "predict with --backend torch")
        network = OnnxNetwork(session(data, threads), stored_expertise(trained.network))
        return TrainedModel(network, trained.plan, trained.checkpoint)
    if not path.is_file():
        raise MedsslError(f"{path} does not exist (--model takes a .onnx file of `medssl export` or a run folder)")
    inference = session(path, threads)
    meta = inference.get_modelmeta().custom_metadata_map
    if PLAN_KEY not in meta:
        raise MedsslError(f"{path} is not a medssl export: its metadata lacks the plan ({PLAN_KEY}) prediction needs")
    try:
        plan = Plan(**json.loads(meta[PLAN_KEY]))
    except (ValueError, TypeError) as exc:
        raise MedsslError(f"{path}: the plan in its metadata is not valid: {exc}") from None
    expertise = json.loads(meta["medssl.expertise"]) if "medssl.expertise" in meta else None
    return TrainedModel(OnnxNetwork(inference, expertise), plan, path, data=meta.get("medssl.data") or None)

"""The registry with kinds (``medssl.registry``) and ``medssl list``: names per kind, duplicates and unknown names
refused, and a registration is all it takes for a method or protocol to be listed, offered and used."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medssl import registry
from medssl.cli import app
from medssl.errors import MedsslError
from medssl.labelfree.cluster_evaluation import evaluate_clusters
from medssl.labelfree.config import KMeansConfig, LabelFreeMethod, resolve_method_config
from medssl.labelfree.protocols import ClusterProtocol, select_cluster
from medssl.labelfree.regions import ClusterResult
from medssl.labelfree.segment import segment_image
from medssl.pretrain import SimCLR
from medssl.pretrain import registry as pretrain_registry

EXPECTED = {
    "pretraining": ["autoencoder", "byol", "mim", "pcrl", "pgl", "simclr", "vae"],
    "segmentation": [
        "adversarial",
        "dodnet",
        "masked-sigmoid",
        "mrnet",
        "multihead",
        "rater-mean",
        "separate",
        "supervised",
    ],
    "label-free": ["kmeans", "s3"],
    "evaluation": ["best-cluster", "border", "darkest", "label-map", "lesion", "paper-code"],
    "super-resolution": ["edsr", "rcan", "seran"],
}


@pytest.fixture
def scratch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let a test register entries without leaking them into the other tests."""
    for kind in registry.kinds():
        registry.names(kind)  # import the registering modules first, into the real tables
    objects = {kind: dict(entries) for kind, entries in registry._OBJECTS.items()}
    monkeypatch.setattr(registry, "_OBJECTS", objects)
    monkeypatch.setattr(registry, "_DESCRIPTIONS", dict(registry._DESCRIPTIONS))
    monkeypatch.setattr(pretrain_registry, "_METHODS", objects["pretraining"])
    yield


def _list(*args: str) -> str:
    result = CliRunner().invoke(app, ["list", *args], env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def _listed(output: str) -> dict[str, dict[str, str]]:
    """``medssl list`` output as kind -> {name: description}."""
    listed: dict[str, dict[str, str]] = {}
    kind = ""
    for line in output.splitlines():
        if heading := re.match(r"(\S+) \(used by: .*\)$", line):
            kind = heading.group(1)
            listed[kind] = {}
        elif line.startswith("  ") and line.strip() != "none registered yet":
            name, _, description = line.strip().partition("  ")
            listed[kind][name] = description.strip()
    return listed


def test_kinds_and_the_names_of_each() -> None:
    assert registry.kinds() == list(EXPECTED)
    for kind, expected in EXPECTED.items():
        assert registry.names(kind) == expected
    assert registry.get("pretraining", "simclr") is SimCLR
    assert registry.get("label-free", "kmeans").config is KMeansConfig


def test_the_pretraining_layer_reads_the_same_registry() -> None:
    assert pretrain_registry.names() == registry.names("pretraining")
    for name in pretrain_registry.names():
        assert pretrain_registry.get(name) is registry.get("pretraining", name)


@pytest.mark.parametrize("kind", [k for k in EXPECTED if EXPECTED[k]])
def test_an_unknown_name_lists_the_known_names_of_its_kind(kind: str) -> None:
    with pytest.raises(MedsslError, match=re.escape(f"'nope'; known {registry.kind_noun(kind)}s: ")) as info:
        registry.get(kind, "nope")
    assert str(info.value).endswith(", ".join(EXPECTED[kind]))


def test_an_unknown_kind_is_refused_everywhere() -> None:
    known = "known kinds: pretraining, segmentation, label-free, evaluation, super-resolution"
    for call in (
        lambda: registry.names("losses"),
        lambda: registry.get("losses", "dice"),
        lambda: registry.register("losses", "dice"),
        lambda: registry.register_object("losses", "dice", object()),
    ):
        with pytest.raises(MedsslError, match=f"unknown registry kind 'losses'; {known}"):
            call()


@pytest.mark.usefixtures("scratch")
def test_duplicate_names_within_a_kind_raise() -> None:
    registry.register_object("segmentation", "example", object())
    with pytest.raises(ValueError, match="segmentation system 'example' is already registered"):
        registry.register_object("segmentation", "example", object())
    with pytest.raises(ValueError, match="already registered"):
        registry.register("evaluation", "label-map")(type("Other", (), {}))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_object("label-free", "s3", object())
    registry.register_object("super-resolution", "adversarial", object())  # another kind: allowed
    with pytest.raises(ValueError, match="non-empty"):
        registry.register_object("segmentation", "", object())


def test_list_shows_every_registered_name_of_every_kind_with_a_description() -> None:
    listed = _listed(_list())
    assert list(listed) == registry.kinds()
    for kind in registry.kinds():
        assert list(listed[kind]) == registry.names(kind)
        assert all(listed[kind].values()), listed[kind]  # one line on each
    assert _listed(_list("evaluation")) == {"evaluation": listed["evaluation"]}
    result = CliRunner().invoke(app, ["list", "losses"])
    assert result.exit_code == 1 and isinstance(result.exception, MedsslError)


@pytest.mark.usefixtures("scratch")
def test_a_registration_shows_up_in_list_and_in_the_help() -> None:
    @registry.register("super-resolution", "bicubic")
    class Bicubic:
        """Bicubic upsampling, the baseline."""

    registry.register_object(
        "evaluation", "largest", ClusterProtocol("the largest cluster is the prediction", _largest)
    )
    listed = _listed(_list())
    assert listed["super-resolution"]["bicubic"] == "Bicubic upsampling, the baseline."
    assert listed["evaluation"]["largest"] == "the largest cluster is the prediction"
    help_text = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"}).output
    assert "best-cluster, border, darkest, label-map, largest, lesion, paper-code" in help_text


def _largest(labels: np.ndarray, truth: object, lightness: object) -> int:
    values, counts = np.unique(labels[labels > 0], return_counts=True)
    return int(values[np.argmax(counts)])


@pytest.mark.usefixtures("scratch")
def test_a_registered_protocol_is_used_by_the_evaluation(tmp_path: Path) -> None:
    registry.register_object("evaluation", "largest", ClusterProtocol("the largest cluster", _largest))
    labels = np.full((16, 16), 2, np.uint8)
    labels[4:8, 4:8] = 1
    truth = np.where(labels == 2, 255, 0).astype(np.uint8)
    for folder, array in (("maps", labels), ("truth", truth)):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / "c0.png")
    assert select_cluster("largest", labels) == 2
    result = evaluate_clusters(tmp_path / "maps", tmp_path / "truth", protocol="largest")
    assert result["cases"][0]["cluster"] == 2 and result["cases"][0]["dice"] == 1.0
    assert result["settings"]["note"] == "the largest cluster"
    with pytest.raises(MedsslError, match="'label-map' does not score cluster maps"):
        select_cluster("label-map", labels)


@pytest.mark.usefixtures("scratch")
def test_a_registered_label_free_method_is_resolved_and_run() -> None:
    def halves(image: np.ndarray, config: KMeansConfig) -> ClusterResult:
        """Left half, right half."""
        raise AssertionError("called")  # reaching it is the point

    registry.register_object("label-free", "halves", LabelFreeMethod(KMeansConfig, halves))
    config = resolve_method_config("halves", clusters=3)
    assert isinstance(config, KMeansConfig) and config.clusters == 3
    with pytest.raises(AssertionError, match="called"):
        segment_image(np.zeros((1, 8, 8)), "halves", config)
    with pytest.raises(MedsslError, match="unknown label-free method 'sam'; known label-free methods: halves, kmeans"):
        resolve_method_config("sam")


def test_the_command_starts_without_torch() -> None:
    code = "import sys, medssl.cli, medssl.registry; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

"""Issue 15's arrangement of the data, metrics and evaluation packages: small modules, small functions, metrics
that are pure functions of arrays, and the public import paths that src/, tests/ and benchmarks/ use."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import medssl

PACKAGE = Path(medssl.__file__).parent
CHECKED = ("data", "metrics", "evaluation")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 65  # the "about 60" (data.plan.make_plan has 62)
# Modules a pure metric must not need: files, folders, reports, datasets.
IMPURE_IMPORTS = ("os", "io", "csv", "json", "pathlib", "shutil", "tempfile", "medssl.data", "medssl.evaluation")


def _modules(*packages: str) -> list[Path]:
    return sorted(p for name in packages for p in (PACKAGE / name).rglob("*.py"))


def test_checked_packages_exist() -> None:
    assert all((PACKAGE / name / "__init__.py").is_file() for name in CHECKED)


@pytest.mark.parametrize("path", _modules(*CHECKED), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.name}: over {MAX_FILE_LINES} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("path", _modules("metrics"), ids=lambda p: p.name)
def test_metrics_are_pure_functions_of_arrays(path: Path) -> None:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    impure = sorted(m for m in imported if any(m == bad or m.startswith(bad + ".") for bad in IMPURE_IMPORTS))
    assert not impure, f"{path.name} imports {impure}: reading and writing files belongs in medssl.evaluation"


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "medssl.data.layouts",
            "Case DatasetIndex LAYOUTS MASK_SUFFIXES detect_layout discover discover_input_cases discover_inputs "
            "scan_dataset unrecognised_warning",
        ),
        (
            "medssl.data.io",
            "IMAGE_SUFFIXES WRITABLE_SUFFIXES image_suffix is_dicom_dir is_image_path read_image read_label stem "
            "write_image",
        ),
        ("medssl.data.views", "IntensityOp ViewGenerator ViewRecord overlap_box overlap_fraction"),
        ("medssl.metrics", "METRICS binary_metrics dice evaluate_arrays hausdorff normalized_surface_dice summarize"),
        (
            "medssl.evaluation",
            "LABEL_MAP MULTI_LABEL evaluate_folders image_files reference_layout structure_dirs write_evaluation",
        ),
    ],
)
def test_public_import_paths(module: str, names: str) -> None:
    loaded = importlib.import_module(module)
    missing = [name for name in names.split() if not hasattr(loaded, name)]
    assert not missing, f"{module} lacks {missing}"


# Functions over the limit, with their length today (a command's option declarations, a network's constructor, a
# reference algorithm): none may grow, and no other may pass it.
LONG_FUNCTIONS_TO_SPLIT = {
    "cli/experiments.py:label_efficiency": 75,  # its option declarations
    "networks/resnet.py:__init__": 67,
    "pretrain/roi_align.py:roi_align": 67,
}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_every_module_is_small(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path.name}: over {MAX_FILE_LINES} lines"
    where = path.relative_to(PACKAGE).as_posix()
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or node.end_lineno is None:
            continue
        length = node.end_lineno - node.lineno + 1
        allowed = LONG_FUNCTIONS_TO_SPLIT.get(f"{where}:{node.name}", MAX_FUNCTION_LINES)
        assert length <= allowed, f"{where}: {node.name} has {length} lines (at most {allowed})"

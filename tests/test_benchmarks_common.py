"""``benchmarks/_common.git_commit``: a result names the commit of the whole tree, dirty when any tracked file
differs (a benchmark script too, not only ``src/``)."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
    return subprocess.check_output(command, cwd=repo, text=True).strip()


@pytest.fixture
def common(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import it as the top-level module ``_common``
    return importlib.import_module("_common")


@pytest.fixture
def repo(tmp_path: Path, common: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed tree with a package file and a benchmark script; ``_common.ROOT`` points at it."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lib.py").write_text("x = 1\n")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench.py").write_text("steps = 10\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "start")
    monkeypatch.setattr(common, "ROOT", tmp_path)
    return tmp_path


def test_a_clean_tree_gives_the_bare_commit(common: ModuleType, repo: Path) -> None:
    assert common.git_commit() == _git(repo, "rev-parse", "HEAD")


def test_an_edited_benchmark_script_marks_the_commit_dirty(common: ModuleType, repo: Path) -> None:
    (repo / "benchmarks" / "bench.py").write_text("steps = 20\n")
    assert common.git_commit() == _git(repo, "rev-parse", "HEAD") + "+dirty"


@pytest.mark.parametrize("change", ["edit_src", "stage_script", "delete_script", "add_tracked"])
def test_any_tracked_difference_marks_the_commit_dirty(common: ModuleType, repo: Path, change: str) -> None:
    if change == "edit_src":
        (repo / "src" / "lib.py").write_text("x = 2\n")
    elif change == "stage_script":
        (repo / "benchmarks" / "bench.py").write_text("steps = 30\n")
        _git(repo, "add", "benchmarks/bench.py")
    elif change == "delete_script":
        (repo / "benchmarks" / "bench.py").unlink()
    else:
        (repo / "README.md").write_text("new\n")
        _git(repo, "add", "README.md")
    assert common.git_commit().endswith("+dirty")


def test_untracked_files_do_not_mark_the_commit_dirty(common: ModuleType, repo: Path) -> None:
    (repo / "benchmarks" / "scratch.txt").write_text("notes\n")
    assert common.git_commit() == _git(repo, "rev-parse", "HEAD")


def test_a_rewritten_result_file_does_not_mark_the_commit_dirty(common: ModuleType, repo: Path) -> None:
    """A grid rewrites its own tracked result JSON after every run; its later runs still name a clean tree."""
    results = repo / "benchmarks" / "results"
    results.mkdir()
    (results / "bench.json").write_text("{}\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "result")
    (results / "bench.json").write_text('{"dice": 0.9}\n')
    assert common.git_commit() == _git(repo, "rev-parse", "HEAD")
    (repo / "benchmarks" / "bench.py").write_text("steps = 40\n")  # the script itself still counts
    assert common.git_commit().endswith("+dirty")


def test_outside_a_checkout_the_commit_is_unknown(
    common: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # do not find a repository above tmp_path
    monkeypatch.setattr(common, "ROOT", plain)
    assert common.git_commit() == "unknown"


def test_the_environment_names_the_cpu_and_its_vector_instructions(common: ModuleType) -> None:
    # AVX2 and AVX-512 kernels round differently: a result must say which machine made it
    import torch

    env = common.environment()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        model = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("model name"))
        assert env["cpu_model"] == model.split(":", 1)[1].strip()
    else:
        assert env["cpu_model"]


def test_a_finished_run_keeps_the_commit_it_was_trained_at(
    common: ModuleType, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid collected later from another tree names each run by the commit that trained it, not its own."""
    from medssl import api

    trained: list[Path] = []

    def finetune(data: Path, run: Path, **_: object) -> None:
        run.mkdir(parents=True, exist_ok=True)
        (run / "result.json").write_text("{}\n")
        trained.append(run)

    monkeypatch.setattr(api, "finetune", finetune)
    run = tmp_path / "runs" / "seed0"
    first = _git(repo, "rev-parse", "HEAD")
    common.finetune_once(tmp_path, run, "a run")
    (repo / "README.md").write_text("later\n")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "-q", "-m", "later")
    common.finetune_once(tmp_path, run, "a run")  # finished: not trained again, its commit kept
    assert trained == [run] and common.trained_at(run) == first != common.git_commit()
    assert common.trained_at(tmp_path / "runs" / "older") == "unknown"


@pytest.mark.parametrize(("given", "used"), [({}, "32-true"), ({"precision": "bf16-mixed"}, "bf16-mixed")])
def test_grid_runs_train_in_float32_unless_asked(
    common: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: dict[str, str], used: str
) -> None:
    """The grids join runs of several machines: the fine-tuning default (``auto``, bf16 on an AMX CPU) is not theirs."""
    from medssl import api

    seen: dict[str, object] = {}

    def finetune(data: Path, run: Path, **options: object) -> None:
        run.mkdir(parents=True, exist_ok=True)
        seen.update(options)

    monkeypatch.setattr(api, "finetune", finetune)
    common.finetune_once(tmp_path, tmp_path / "run", "a run", **given)
    assert seen["precision"] == used

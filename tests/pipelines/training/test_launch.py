"""Pretraining under ``torchrun``: real worker processes (gloo, CPU) started by the launcher."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from test_pretrain import CUTOFF, FAST, TOKENIZER, catalogue, planted_tokens

from pipelines.models import FoundationModel
from pipelines.training.launch import DistributedTrainingError, run_pretraining
from pipelines.training.loop import MetricsLogger
from pipelines.training.pretrain import PretrainResult

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is unavailable",
)

MEMBERS = 63  # odd: the two ranks' validation shards differ by one, so evaluation pads a row
# The tiny preset has no dropout; cold-title dropout is the one other per-step draw, and each
# rank draws its own, so it is off here to make one and two processes the same computation.
DETERMINISTIC = {"cold_title_rate": 0.0}


def run(
    output_dir: Path,
    processes: int,
    cutoff: dt.date = CUTOFF,
    log_metrics: MetricsLogger | None = None,
    log_line: list[str] | None = None,
) -> PretrainResult:
    tokens = planted_tokens()
    tokens = tokens[tokens["user_id"].isin(sorted(set(tokens["user_id"]))[:MEMBERS])]
    return run_pretraining(
        tokens,
        catalogue(),
        TOKENIZER,
        cutoff,
        "tiny",
        "tiny",
        output_dir,
        log_metrics,
        model_overrides=DETERMINISTIC,
        train_overrides=FAST,
        processes=processes,
        log_line=None if log_line is None else log_line.append,
    )


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """One intra-op thread here and in every worker (two cores are shared by the whole suite)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_two_processes_write_one_model_that_matches_one_process(tmp_path: Path) -> None:
    single = run(tmp_path / "one", 1)
    logged: list[tuple[int, dict[str, float]]] = []
    lines: list[str] = []
    double = run(
        tmp_path / "two", 2, log_metrics=lambda m, s: logged.append((s, m)), log_line=lines
    )

    # Rank 0 alone wrote: the files of a one-process run, one model folder, one final checkpoint.
    assert files(tmp_path / "two") == files(tmp_path / "one")
    assert list((tmp_path / "two").rglob("config.json")) == [double.model_dir / "config.json"]
    assert [p.name for p in double.checkpoint_dir.iterdir() if p.is_dir()] == ["step-00000040"]
    loaded = FoundationModel.from_pretrained(double.model_dir)
    for name, tensor in single.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=1e-4, rtol=1e-4)

    # Every window has 16 targets, so the mean of the ranks' batch means is the global batch
    # mean, DDP averages the gradients and evaluation sums disjoint shards: the two runs do the
    # same arithmetic in another order. Measured: validation losses 1e-7 apart after 40 steps.
    # A fault moves them far more: counting the row the sampler repeats for rank 1 (63 members
    # on 2 ranks) shifts the loss by 5e-4 relative, 50 times this tolerance.
    assert double.validation["loss"] == pytest.approx(single.validation["loss"], rel=1e-5)
    assert double.validation["hit_at_10"] == pytest.approx(
        single.validation["hit_at_10"], abs=1 / MEMBERS
    )
    assert double.members == single.members == MEMBERS
    assert (double.train.steps, double.train_tokens) == (single.train.steps, single.train_tokens)

    # Per-step metrics reached this process while the workers ran, as in the one-process run.
    steps = [step for step, metrics in logged if "train/loss" in metrics]
    assert steps == list(range(1, FAST["max_steps"] + 1))
    assert [(s, m["train/loss"]) for s, m in logged if "train/loss" in m] == double.history[
        "train/loss"
    ]
    torch.testing.assert_close(
        torch.tensor([v for _, v in double.history["train/loss"]]),
        torch.tensor([v for _, v in single.history["train/loss"]]),
        atol=1e-4,
        rtol=1e-4,
    )
    assert not any("@@reelfm-metrics" in line for line in lines)
    one, two = single.params(), double.params()
    assert two.pop("train.progress") is False  # workers log metrics, not a progress bar
    one.pop("train.progress")
    assert two == one


def test_a_failing_worker_raises_with_its_traceback(tmp_path: Path) -> None:
    with pytest.raises(DistributedTrainingError) as failure:
        run(tmp_path, 2, cutoff=dt.date(2025, 12, 31))  # no token falls before it
    message = str(failure.value)
    assert "pretraining under torchrun failed" in message
    assert "ValueError: no interaction tokens before the cut-off 2025-12-31" in message
    assert "Traceback" in message
    assert not (tmp_path / "model").exists()


def test_processes_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="processes must be at least 1"):
        run(tmp_path, 0)

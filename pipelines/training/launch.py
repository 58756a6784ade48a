"""Pretraining on N processes under ``torchrun``, started from an ordinary process.

``run_pretraining`` is ``pretrain_foundation`` with one more argument, ``processes``: at 1 it
trains in this process; above 1 it writes the inputs to a temporary folder (tokens and catalogue
as Parquet, the tokenizer, the arguments as JSON), runs

    python -m torch.distributed.run --standalone --nproc_per_node N -m pipelines.training.launch DIR

and waits. Every worker reads the folder and calls ``pretrain_foundation``, which trains
data-parallel (one process per GPU on a GPU machine, gloo on CPU); rank 0 writes the model folder,
the plot, the checkpoints and a ``result.json`` the caller turns back into the ``PretrainResult``
the in-process path returns, with the saved weights loaded from the model folder. While it runs,
each step's metrics reach the caller's ``log_metrics`` (rank 0 prints them on a marked line) and
every other output line its ``log_line``. A worker that raises writes its traceback beside the
inputs; the caller raises ``DistributedTrainingError`` with the first one.

Workers show no progress bar (their output goes to a log, where per-step metrics already are),
and run ``OMP_NUM_THREADS`` = cores / processes unless the variable is set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import tempfile
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.models import FoundationModel
from pipelines.tokens.tokenizer import TOKENIZER_FILE, InteractionTokenizer
from pipelines.training.loop import MetricsLogger, TrainConfig, TrainResult
from pipelines.training.pretrain import PretrainResult, pretrain_foundation

logger = logging.getLogger(__name__)

METRICS_MARKER = "@@reelfm-metrics "
"""Prefix of the stdout line on which rank 0 reports one step's metrics as ``[step, {...}]``."""
SPEC_FILE, RESULT_FILE = "spec.json", "result.json"
TOKENS_FILE, TITLES_FILE = "tokens.parquet", "titles.parquet"
ERROR_FILE = "error-rank{rank}.txt"
OUTPUT_TAIL_LINES = 40
"""Lines of torchrun's output quoted in the error when no worker left a traceback."""

LineLogger = Callable[[str], None]


class DistributedTrainingError(RuntimeError):
    """A ``torchrun`` pretraining run failed; the message holds the failing worker's traceback."""


def run_pretraining(
    tokens: pd.DataFrame,
    titles: pd.DataFrame,
    tokenizer: InteractionTokenizer,
    cutoff: dt.date,
    model_preset: str,
    train_preset: str,
    output_dir: Path,
    log_metrics: MetricsLogger | None = None,
    seed: int = 0,
    *,
    model_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    checkpoint_dir: Path | None = None,
    processes: int = 1,
    log_line: LineLogger | None = None,
) -> PretrainResult:
    """``pretrain_foundation`` in this process (``processes`` = 1) or under ``torchrun``.

    ``TrainConfig.batch_size`` is the global batch either way, so it must divide by
    ``processes``; ``log_line`` receives the workers' output (default: this module's logger).
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    arguments = dict(
        model_preset=model_preset,
        train_preset=train_preset,
        output_dir=output_dir,
        log_metrics=log_metrics,
        seed=seed,
        model_overrides=model_overrides,
        train_overrides=train_overrides,
        checkpoint_dir=checkpoint_dir,
    )
    if processes == 1:
        return pretrain_foundation(tokens, titles, tokenizer, cutoff, **arguments)
    return _launch(tokens, titles, tokenizer, cutoff, arguments, processes, log_line)


def _launch(
    tokens: pd.DataFrame,
    titles: pd.DataFrame,
    tokenizer: InteractionTokenizer,
    cutoff: dt.date,
    arguments: Mapping[str, Any],
    processes: int,
    log_line: LineLogger | None,
) -> PretrainResult:
    """Run ``pretrain_foundation(..., **arguments)`` on ``processes`` workers under ``torchrun``.

    The inputs are copied to a temporary folder (``TMPDIR``) for the workers to read.
    """
    checkpoint_dir = arguments["checkpoint_dir"]
    with tempfile.TemporaryDirectory(prefix="reelfm-torchrun-") as tmp:
        work = Path(tmp)
        tokens.to_parquet(work / TOKENS_FILE, index=False)
        titles.to_parquet(work / TITLES_FILE, index=False)
        tokenizer.save(work / TOKENIZER_FILE)
        spec = {
            "cutoff": cutoff.isoformat(),
            "model_preset": arguments["model_preset"],
            "train_preset": arguments["train_preset"],
            "output_dir": str(Path(arguments["output_dir"]).resolve()),
            "seed": arguments["seed"],
            "model_overrides": dict(arguments["model_overrides"] or {}),
            "train_overrides": dict(arguments["train_overrides"] or {}),
            "checkpoint_dir": None
            if checkpoint_dir is None
            else str(Path(checkpoint_dir).resolve()),
        }
        (work / SPEC_FILE).write_text(json.dumps(spec))
        returncode, tail = _stream(
            torchrun_command(processes, work),
            _worker_environment(processes),
            log_line or logger.info,
            arguments["log_metrics"],
        )
        if returncode != 0:
            raise DistributedTrainingError(_failure_message(work, returncode, tail))
        return _read_result(work / RESULT_FILE)


def torchrun_command(processes: int, work_dir: Path) -> list[str]:
    """The ``torchrun`` command line that runs this module's worker on one machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a rendezvous on a free local port, so runs side by side do not clash
        f"--nproc_per_node={processes}",
        "-m",
        __name__,
        str(work_dir),
    ]


def _worker_environment(processes: int) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])  # the folder holding ``pipelines``
    path = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": root if not path else os.pathsep.join([root, path]),
        "PYTHONUNBUFFERED": "1",  # lines reach the caller as they are printed
    }
    env.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // processes, 1)))
    return env


def _stream(
    command: list[str],
    env: Mapping[str, str],
    log_line: LineLogger,
    log_metrics: MetricsLogger | None,
) -> tuple[int, list[str]]:
    """Run ``command``, passing metrics lines to ``log_metrics`` and the rest to ``log_line``.

    Returns the exit code and the last lines of output. Stopping the caller stops the run.
    """
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env),
        text=True,
        errors="replace",
    )
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip()
            # Another rank's unfinished line may precede the marker on the same pipe line.
            before, marker, payload = line.partition(METRICS_MARKER)
            if marker:
                step, metrics = json.loads(payload)
                if log_metrics is not None:
                    log_metrics(metrics, step)
                line = before
            if line.strip():
                tail.append(line)
                log_line(line)
        return process.wait(), list(tail)
    finally:
        if process.poll() is None:  # the caller was interrupted: torchrun stops its workers
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _failure_message(work: Path, returncode: int, tail: list[str]) -> str:
    errors = sorted(work.glob(ERROR_FILE.format(rank="*")), key=lambda p: p.stat().st_mtime_ns)
    if errors:  # the first to fail is the cause; later ones are usually peers losing it
        rank = errors[0].stem.removeprefix("error-rank")
        detail = f"rank {rank} raised:\n{errors[0].read_text().rstrip()}"
    else:
        detail = "no worker left a traceback; the last lines of output:\n" + "\n".join(tail)
    return f"pretraining under torchrun failed (exit code {returncode}); {detail}"


def _read_result(path: Path) -> PretrainResult:
    saved = json.loads(path.read_text())
    model_dir = Path(saved["model_dir"])
    model = FoundationModel.from_pretrained(model_dir).eval()
    loop = saved["train"]
    return PretrainResult(
        model=model,
        model_dir=model_dir,
        loss_curve=Path(saved["loss_curve"]),
        checkpoint_dir=Path(saved["checkpoint_dir"]),
        validation=saved["validation"],
        history={name: [(s, v) for s, v in points] for name, points in saved["history"].items()},
        train=TrainResult(
            **{**loop, "checkpoint": loop["checkpoint"] and Path(loop["checkpoint"])}
        ),
        model_config=model.config,
        train_config=_train_config(saved["train_config"]),
        members=saved["members"],
        train_tokens=saved["train_tokens"],
        trained_titles=saved["trained_titles"],
    )


def _train_config(values: Mapping[str, Any]) -> TrainConfig:
    """A ``TrainConfig`` from JSON, with its tuple fields (``betas``) tuples again."""
    defaults = TrainConfig()
    return TrainConfig(
        **{
            f.name: tuple(values[f.name])
            if isinstance(getattr(defaults, f.name), tuple)
            else values[f.name]
            for f in fields(TrainConfig)
            if f.name in values
        }
    )


def _result_json(result: PretrainResult) -> dict[str, Any]:
    return {
        "model_dir": str(result.model_dir),
        "loss_curve": str(result.loss_curve),
        "checkpoint_dir": str(result.checkpoint_dir),
        "validation": result.validation,
        "history": result.history,
        "train": {
            **asdict(result.train),
            "checkpoint": result.train.checkpoint and str(result.train.checkpoint),
        },
        "train_config": asdict(result.train_config),
        "members": result.members,
        "train_tokens": result.train_tokens,
        "trained_titles": result.trained_titles,
    }


def _report_metrics(metrics: dict[str, float], step: int) -> None:
    print(METRICS_MARKER + json.dumps([step, metrics]), flush=True)


def worker(work_dir: Path) -> None:
    """One ``torchrun`` worker: pretrain from ``work_dir``'s inputs; rank 0 writes the result."""
    spec = json.loads((work_dir / SPEC_FILE).read_text())
    result = pretrain_foundation(
        pd.read_parquet(work_dir / TOKENS_FILE),
        pd.read_parquet(work_dir / TITLES_FILE),
        InteractionTokenizer.load(work_dir / TOKENIZER_FILE),
        dt.date.fromisoformat(spec["cutoff"]),
        spec["model_preset"],
        spec["train_preset"],
        Path(spec["output_dir"]),
        log_metrics=_report_metrics,  # the loop calls it on rank 0 only
        seed=spec["seed"],
        model_overrides=spec["model_overrides"],
        train_overrides={**spec["train_overrides"], "progress": False},
        checkpoint_dir=spec["checkpoint_dir"] and Path(spec["checkpoint_dir"]),
    )
    if int(os.environ.get("RANK", "0")) == 0:
        (work_dir / RESULT_FILE).write_text(json.dumps(_result_json(result)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="A torchrun worker of run_pretraining (started by it, not by hand)."
    )
    parser.add_argument("work_dir", type=Path, help="the folder run_pretraining wrote")
    work_dir = parser.parse_args(argv).work_dir
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s"
    )
    try:
        worker(work_dir)
    except Exception:
        (work_dir / ERROR_FILE.format(rank=rank)).write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()

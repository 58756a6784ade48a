"""Data pipeline speed: events/s and peak memory of bronze, silver and gold on local Spark.

Run: ``.venv/bin/python benchmarks/data_pipeline.py [--events 1000000] [--days 5]``.

Generates about ``--events`` synthetic events over ``--days`` landing days (timed apart: not part
of the pipeline), then runs the pipelines' own functions day by day on ``local[--cores]``:
bronze (titles upsert + ``ingest_events_day``, Great Expectations included), silver
(``sessionise_day``) and gold (``tokenise_day``). For each stage it prints events/s and the peak
resident memory of the driver JVM and of Python, sampled from ``/proc`` every 0.1 s. The
end-to-end landing → gold rate, JVM start included, is reported on its own line. As a yardstick,
DuckDB does the same sessionisation (read JSONL, dedupe by ``event_id``, lag gap > 30 min → new
session, running sum, write Parquet) on the same landing files with the same number of threads;
compare ratios taken in one run, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.sources.synthetic import PRESETS, generate, scale_to_target_events

INACTIVITY_GAP_S = 30 * 60
STAMP_NAME = "_benchmark.json"


# --- memory sampling -------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0  # a zombie has no VmRSS line


def _process_names() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) of every live process."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[int(name)] = (int(tail.split()[1]), head.split("(", 1)[1])
    return found


def sample_memory() -> tuple[int, int]:
    """(JVM RSS, Python RSS) in bytes: java descendants, and this process plus Python workers.

    Only processes named ``java`` or ``python*`` count: a child the JVM forks to run a shell
    command shares its memory map until it execs, and would report the JVM's RSS a second time.
    """
    processes = _process_names()
    jvm, python = 0, _rss_bytes(os.getpid())
    stack = [os.getpid()]
    while stack:
        parent = stack.pop()
        for pid, (ppid, name) in processes.items():
            if ppid != parent:
                continue
            stack.append(pid)
            try:
                if name == "java" and processes.get(ppid, (0, ""))[1] != "java":
                    jvm += _rss_bytes(pid)
                elif name.startswith("python"):
                    python += _rss_bytes(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
    return jvm, python


class PeakMemory:
    """Samples ``sample_memory`` on a daemon thread; ``peak()`` is the maximum since ``reset()``."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self._interval = interval_s
        self._lock = threading.Lock()
        self._jvm = self._python = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="peak-memory")

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.observe()

    def observe(self) -> None:
        jvm, python = sample_memory()
        with self._lock:
            self._jvm, self._python = max(self._jvm, jvm), max(self._python, python)

    def reset(self) -> None:
        with self._lock:
            self._jvm = self._python = 0
        self.observe()

    def peak(self) -> tuple[int, int]:
        self.observe()
        with self._lock:
            return self._jvm, self._python

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class StageResult:
    """One timed stage: how many events went through it, how long it took, peak memory."""

    name: str
    events: int
    seconds: float
    jvm_peak: int  # bytes
    python_peak: int  # bytes

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


@contextmanager
def timed_stage(name: str, memory: PeakMemory, results: list[StageResult]) -> Iterator[StageResult]:
    """Time the body; it sets ``.events`` on the yielded result."""
    memory.reset()
    result = StageResult(name, 0, 0.0, 0, 0)
    began = time.perf_counter()
    yield result
    result.seconds = time.perf_counter() - began
    result.jvm_peak, result.python_peak = memory.peak()
    results.append(result)
    print(
        f"  {name:<8} {result.events:>12,} events  {result.seconds:8.1f} s  "
        f"{result.events_per_s:>10,.0f} ev/s  JVM {result.jvm_peak / 2**30:.2f} GiB",
        flush=True,
    )


# --- landing data ----------------------------------------------------------------------------


def landing_days(events: int, days: int, bad_rate: float, landing_root: Path) -> list[dt.date]:
    """Write (or reuse, when the stamp matches) about ``events`` events over ``days`` days."""
    config = replace(PRESETS["benchmark"], days=days, bad_rate=bad_rate)
    stamp = {"events": events, "days": days, "bad_rate": bad_rate, "seed": config.seed}
    stamp_path = landing_root / STAMP_NAME
    dates = [config.start_date + dt.timedelta(days=d) for d in range(days)]
    if stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        print(f"reusing landing data in {landing_root}", flush=True)
        return dates
    shutil.rmtree(landing_root, ignore_errors=True)
    began = time.perf_counter()
    config = scale_to_target_events(config, events)
    summary = generate(config, landing_root, progress=True)
    print(
        f"generated {summary.events:,} events + {summary.injected:,} bad lines "
        f"({config.n_members:,} members, {days} days) in {time.perf_counter() - began:.1f} s "
        "(not part of the pipeline timings)",
        flush=True,
    )
    stamp_path.write_text(json.dumps(stamp))
    return dates


# --- Spark: bronze, silver, gold ------------------------------------------------------------


def run_spark(
    home: Path, dates: list[dt.date], cores: int, memory: PeakMemory
) -> tuple[list[StageResult], float]:
    """Run the three stages over ``dates``; returns their results and the JVM start seconds."""
    from pipelines.ingest.bronze import ingest_events_day
    from pipelines.ingest.rules import IngestRules
    from pipelines.ingest.titles import upsert_titles
    from pipelines.sessions.sessionise import SessionConfig
    from pipelines.sessions.silver import sessionise_day
    from pipelines.settings import Settings
    from pipelines.spark_session import build_spark_session
    from pipelines.tokens.gold import tokenise_day
    from pipelines.tokens.interactions import TokenConfig

    settings = replace(Settings.from_env().with_home(home), spark_master=f"local[{cores}]")
    results: list[StageResult] = []
    with timed_stage("jvm", memory, results):
        spark = build_spark_session(settings, app_name="reelfm-data-benchmark")
        spark.range(1).count()
    try:
        with timed_stage("titles", memory, results):
            for day in dates:
                upsert_titles(spark, settings, day)
        with timed_stage("bronze", memory, results) as stage:
            rules = IngestRules()
            for day in dates:
                stage.events += ingest_events_day(spark, settings, day, rules).received
        with timed_stage("silver", memory, results) as stage:
            for day in dates:
                stage.events += sessionise_day(spark, settings, day, SessionConfig()).session_events
        with timed_stage("gold", memory, results) as stage:
            for day in dates:
                stage.events += tokenise_day(spark, settings, day, TokenConfig()).session_events
    finally:
        spark.stop()
    jvm = results.pop(0)
    return results, jvm.seconds


# --- DuckDB reference -----------------------------------------------------------------------

_DUCKDB_SESSIONS = """
COPY (
  WITH raw AS (
    SELECT * FROM read_json(
      '{landing}/events/date=*/*.jsonl', format = 'newline_delimited', ignore_errors = true,
      columns = {{event_id: 'VARCHAR', user_id: 'VARCHAR', title_id: 'VARCHAR',
                 event_type: 'VARCHAR', event_ts: 'TIMESTAMP', watch_seconds: 'DOUBLE',
                 position_seconds: 'DOUBLE', rating: 'DOUBLE', device: 'VARCHAR',
                 country: 'VARCHAR'}})
    WHERE event_id IS NOT NULL AND user_id IS NOT NULL AND event_ts IS NOT NULL
  ),
  deduped AS (
    SELECT * FROM raw QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY event_ts) = 1
  ),
  starts AS (
    SELECT *, CASE WHEN epoch(event_ts) - epoch(lag(event_ts) OVER w) <= {gap} THEN 0 ELSE 1 END
      AS _starts
    FROM deduped WINDOW w AS (PARTITION BY user_id ORDER BY event_ts, event_id)
  )
  SELECT * EXCLUDE (_starts),
    sum(_starts) OVER (PARTITION BY user_id ORDER BY event_ts, event_id
                       ROWS UNBOUNDED PRECEDING) AS session_no
  FROM starts
) TO '{out}' (FORMAT parquet)
"""


def run_duckdb(home: Path, cores: int, memory: PeakMemory) -> StageResult:
    """Landing JSONL → deduped, sessionised Parquet in DuckDB, in this process."""
    import duckdb

    results: list[StageResult] = []
    with timed_stage("duckdb", memory, results) as stage:
        (home / "duckdb").mkdir(exist_ok=True)
        con = duckdb.connect(config={"threads": cores})
        try:
            sql = _DUCKDB_SESSIONS.format(
                landing=home / "landing",
                out=home / "duckdb" / "sessions.parquet",
                gap=INACTIVITY_GAP_S,
            )
            stage.events = con.execute(sql).fetchone()[0]
        finally:
            con.close()
    return results[0]


# --- report ---------------------------------------------------------------------------------


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def print_report(
    stages: list[StageResult], jvm_s: float, duck: StageResult | None, received: int
) -> None:
    rows = [
        (s.name, s.events, s.seconds, s.events_per_s, _gib(s.jvm_peak), _gib(s.python_peak))
        for s in stages
    ]
    total_s = sum(s.seconds for s in stages)
    three = (
        "all stages",
        received,
        total_s,
        received / total_s,
        _gib(max(s.jvm_peak for s in stages)),
        _gib(max(s.python_peak for s in stages)),
    )
    rows.append(three)
    rows.append(
        ("end-to-end (+JVM)", received, total_s + jvm_s, received / (total_s + jvm_s), "", "")
    )
    if duck is not None:
        rows.append(
            (duck.name, duck.events, duck.seconds, duck.events_per_s, "-", _gib(duck.python_peak))
        )
    print()
    print(
        f"{'stage':<20}{'events':>12}{'seconds':>10}{'events/s':>12}{'JVM GiB':>10}{'Python GiB':>12}"
    )
    for name, events, seconds, rate, jvm, py in rows:
        shown = f"{rate:,.0f}" if events else "-"
        print(f"{name:<20}{events:>12,}{seconds:>10.1f}{shown:>12}{jvm:>10}{py:>12}")
    print(
        f"all stages = titles + bronze + silver + gold; JVM start {jvm_s:.1f} s is in end-to-end only"
    )
    if duck is not None:
        by_name = {s.name: s for s in stages}
        to_sessions = received / (by_name["bronze"].seconds + by_name["silver"].seconds)
        print(
            f"Spark / DuckDB events/s: landing→sessions (bronze+silver) "
            f"{to_sessions / duck.events_per_s:.3f}, silver alone "
            f"{by_name['silver'].events_per_s / duck.events_per_s:.3f}"
        )
    print(
        f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (cores: {os.cpu_count()})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="benchmarks/data_pipeline.py",
        description="Time bronze, silver and gold on local Spark (events/s, peak memory) against DuckDB.",
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events to generate (about)")
    parser.add_argument("--days", type=int, default=5, help="landing days the events spread over")
    parser.add_argument(
        "--home",
        type=Path,
        help="scratch REELFM_HOME (default: a new folder under /tmp, removed unless --keep)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch home (landing, lake)")
    parser.add_argument("--skip-duckdb", action="store_true", help="skip the DuckDB reference")
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N] and DuckDB threads")
    parser.add_argument(
        "--bad-rate", type=float, default=0.001, help="share of injected bad lines (rejected path)"
    )
    args = parser.parse_args(argv)

    home = (args.home or Path(tempfile.mkdtemp(prefix="reelfm-bench-", dir="/tmp"))).resolve()
    print(
        f"home {home}; load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
        f"on {os.cpu_count()} cores",
        flush=True,
    )
    try:
        dates = landing_days(args.events, args.days, args.bad_rate, home / "landing")
        for leftover in ("lake", "spark-warehouse", "duckdb"):
            shutil.rmtree(home / leftover, ignore_errors=True)
        with PeakMemory() as memory:
            stages, jvm_s = run_spark(home, dates, args.cores, memory)
            duck = None if args.skip_duckdb else run_duckdb(home, args.cores, memory)
        received = next(s.events for s in stages if s.name == "bronze")
        print_report(stages, jvm_s, duck, received)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

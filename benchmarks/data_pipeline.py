"""Data pipeline speed: events/s and peak memory of bronze, silver and gold on local Spark.

Run: ``.venv/bin/python benchmarks/data_pipeline.py [--events 1000000] [--days 5]``.

Generates about ``--events`` synthetic events over ``--days`` landing days (timed apart: not part
of the pipeline), then runs the pipelines' own functions day by day on ``local[--cores]``:
titles (``upsert_titles``), bronze (``ingest_events_day``, Great Expectations included), silver
(``sessionised_day``: sessions written, events kept cached) and gold (``tokenise_day`` on that
cache), day by day as the nightly job runs them. For each stage it prints events/s, CPU seconds
(JVM + Python; events per CPU-second is the figure that moves least with other people's load)
and the peak resident memory of the driver JVM and of Python, sampled from ``/proc`` every 0.1 s.
The end-to-end landing → gold rate, JVM start included, is reported on its own line. As a yardstick,
DuckDB does the same sessionisation (read JSONL, dedupe by ``event_id``, lag gap > 30 min → new
session, running sum, write Parquet) on the same landing files with the same number of threads;
compare ratios taken in one run, since the machine may be shared.

``--landing-format parquet`` writes the landing events as typed Parquet instead of JSON lines
(the same events; bronze reads them without text parsing, DuckDB with ``read_parquet``); the
format is part of the reuse stamp, so a kept landing of the other format is regenerated.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipelines.sources.synthetic import (
    LANDING_FORMATS,
    PRESETS,
    generate,
    scale_to_target_events,
)

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


def _our_processes() -> list[tuple[int, str]]:
    """(pid, kind) of this process ("python"), its Python workers and the Spark JVM ("java").

    Only processes named ``java`` or ``python*`` count: a child the JVM forks to run a shell
    command shares its memory map until it execs, and would report the JVM's RSS a second time.
    """
    processes = _process_names()
    found = [(os.getpid(), "python")]
    stack = [os.getpid()]
    while stack:
        parent = stack.pop()
        for pid, (ppid, name) in processes.items():
            if ppid != parent:
                continue
            stack.append(pid)
            if name == "java" and processes.get(ppid, (0, ""))[1] != "java":
                found.append((pid, "java"))
            elif name.startswith("python"):
                found.append((pid, "python"))
    return found


def sample_memory() -> tuple[int, int]:
    """(JVM RSS, Python RSS) in bytes."""
    rss = {"java": 0, "python": 0}
    for pid, kind in _our_processes():
        try:
            rss[kind] += _rss_bytes(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return rss["java"], rss["python"]


def cpu_seconds() -> float:
    """User + system CPU seconds used so far by the JVM, this process and its Python workers.

    On a shared machine wall-clock time stretches with other people's load; CPU seconds much less
    so, which makes events per CPU-second the steadier figure to compare runs with.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid, _ in _our_processes():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


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
    cpu_seconds: float = 0.0  # JVM + Python, all cores
    spark_jobs: int = 0
    generated_classes: int = 0  # Spark codegen cache misses (each one a Janino compile)
    jit_seconds: float = 0.0  # HotSpot's compiler threads (bytecode → machine code)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def jvm_compile_counters(spark_context: Any) -> tuple[int, float]:
    """(classes Spark has generated and compiled, seconds HotSpot has spent compiling) so far.

    Spark caches generated code by its source text, so a query whose code is the same as an
    earlier one's costs neither a Janino compile nor HotSpot's compilers; the two counters show
    how much of a stage is compiling rather than processing rows.
    """
    jvm = spark_context._jvm
    compiled = jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
    jit_ms = jvm.java.lang.management.ManagementFactory.getCompilationMXBean()
    return int(compiled.getCount()), jit_ms.getTotalCompilationTime() / 1000


class StageClock:
    """Per-stage totals over the days: seconds add up, peak memory is the largest seen."""

    def __init__(self, memory: PeakMemory, spark_context: Any = None) -> None:
        self.memory = memory
        self.spark_context = spark_context  # when given, Spark jobs are counted per stage
        self.results: dict[str, StageResult] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[StageResult]:
        """Time the body into stage ``name``; the body adds to ``.events``."""
        result = self.results.setdefault(name, StageResult(name, 0, 0.0, 0, 0))
        self.memory.reset()
        if self.spark_context is not None:
            self.spark_context.setJobGroup(name, name)
            classes_began, jit_began = jvm_compile_counters(self.spark_context)
        began, cpu_began = time.perf_counter(), cpu_seconds()
        yield result
        result.seconds += time.perf_counter() - began
        result.cpu_seconds += cpu_seconds() - cpu_began
        if self.spark_context is not None:
            classes, jit = jvm_compile_counters(self.spark_context)
            result.generated_classes += classes - classes_began
            result.jit_seconds += jit - jit_began
            tracker = self.spark_context.statusTracker()
            result.spark_jobs = len(tracker.getJobIdsForGroup(name))
        jvm, python = self.memory.peak()
        result.jvm_peak, result.python_peak = (
            max(result.jvm_peak, jvm),
            max(result.python_peak, python),
        )


# --- landing data ----------------------------------------------------------------------------


def _landing_mib(landing_root: Path) -> float:
    events = landing_root / "events"
    return sum(p.stat().st_size for p in events.rglob("part-*") if p.is_file()) / 2**20


def landing_days(
    events: int, days: int, bad_rate: float, landing_root: Path, landing_format: str = "jsonl"
) -> list[dt.date]:
    """Write (or reuse, when the stamp matches) about ``events`` events over ``days`` days."""
    config = replace(PRESETS["benchmark"], days=days, bad_rate=bad_rate)
    stamp = {
        "events": events,
        "days": days,
        "bad_rate": bad_rate,
        "seed": config.seed,
        "landing_format": landing_format,
    }
    stamp_path = landing_root / STAMP_NAME
    dates = [config.start_date + dt.timedelta(days=d) for d in range(days)]
    if stamp_path.exists():
        found = json.loads(stamp_path.read_text())
        found.setdefault("landing_format", "jsonl")  # stamps from before the option
        if found == stamp:
            print(
                f"reusing {landing_format} landing data in {landing_root} "
                f"({_landing_mib(landing_root):,.0f} MiB of events)",
                flush=True,
            )
            return dates
    shutil.rmtree(landing_root, ignore_errors=True)
    began = time.perf_counter()
    config = scale_to_target_events(config, events)
    summary = generate(config, landing_root, progress=True, landing_format=landing_format)
    print(
        f"generated {summary.events:,} events + {summary.injected:,} bad lines "
        f"({config.n_members:,} members, {days} days) as {landing_format} "
        f"({_landing_mib(landing_root):,.0f} MiB) in {time.perf_counter() - began:.1f} s "
        "(not part of the pipeline timings)",
        flush=True,
    )
    stamp_path.write_text(json.dumps(stamp))
    return dates


# --- Spark: bronze, silver, gold ------------------------------------------------------------


def run_spark(
    home: Path, dates: list[dt.date], cores: int, memory: PeakMemory
) -> tuple[list[StageResult], float]:
    """Run the stages day by day, as the nightly job does; returns their totals and the JVM start."""
    from pipelines.ingest.bronze import ingest_events_day
    from pipelines.ingest.rules import IngestRules
    from pipelines.ingest.titles import upsert_titles
    from pipelines.sessions.sessionise import SessionConfig
    from pipelines.sessions.silver import sessionised_day
    from pipelines.settings import Settings
    from pipelines.spark_session import build_spark_session
    from pipelines.tokens.gold import tokenise_day
    from pipelines.tokens.interactions import TokenConfig

    settings = replace(Settings.from_env().with_home(home), spark_master=f"local[{cores}]")
    clock = StageClock(memory)
    with clock.timed("jvm"):
        spark = build_spark_session(settings, app_name="reelfm-data-benchmark")
        spark.range(1).count()
    clock.spark_context = spark.sparkContext
    try:
        for day in dates:
            began = time.perf_counter()
            classes_began, jit_began = jvm_compile_counters(spark.sparkContext)
            with clock.timed("titles"):
                upsert_titles(spark, settings, day)
            with clock.timed("bronze") as stage:
                received = ingest_events_day(spark, settings, day, IngestRules()).received
                stage.events += received
            # As the sessions_and_tokens asset does: gold tokenises silver's cached events.
            with ExitStack() as keep_until_done:
                with clock.timed("silver") as stage:
                    report, session_events = keep_until_done.enter_context(
                        sessionised_day(spark, settings, day, SessionConfig())
                    )
                    stage.events += report.session_events
                with clock.timed("gold") as stage:
                    tokens = tokenise_day(
                        spark, settings, day, TokenConfig(), session_events=session_events
                    )
                    stage.events += tokens.session_events
            seconds = time.perf_counter() - began
            classes, jit = jvm_compile_counters(spark.sparkContext)
            print(
                f"  {day}  {received:>12,} events  {seconds:7.1f} s  "
                f"{received / seconds:>9,.0f} ev/s  ({tokens.tokens:,} tokens; "
                f"{classes - classes_began} classes generated, {jit - jit_began:.1f} s compiling)",
                flush=True,
            )
    finally:
        spark.stop()
    jvm = clock.results.pop("jvm")
    return list(clock.results.values()), jvm.seconds


# --- DuckDB reference -----------------------------------------------------------------------

_DUCKDB_READ = {
    "jsonl": """read_json(
      '{landing}/events/date=*/*.jsonl', format = 'newline_delimited', ignore_errors = true,
      columns = {{event_id: 'VARCHAR', user_id: 'VARCHAR', title_id: 'VARCHAR',
                 event_type: 'VARCHAR', event_ts: 'TIMESTAMP', watch_seconds: 'DOUBLE',
                 position_seconds: 'DOUBLE', rating: 'DOUBLE', device: 'VARCHAR',
                 country: 'VARCHAR'}})""",
    "parquet": "read_parquet('{landing}/events/date=*/*.parquet')",
}

_DUCKDB_SESSIONS = """
COPY (
  WITH raw AS (
    SELECT * FROM {read}
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


def run_duckdb(
    home: Path, cores: int, memory: PeakMemory, landing_format: str = "jsonl"
) -> StageResult:
    """Landing JSONL (or Parquet) → deduped, sessionised Parquet in DuckDB, in this process."""
    import duckdb

    clock = StageClock(memory)
    with clock.timed("duckdb") as stage:
        (home / "duckdb").mkdir(exist_ok=True)
        con = duckdb.connect(config={"threads": cores})
        try:
            sql = _DUCKDB_SESSIONS.format(
                read=_DUCKDB_READ[landing_format].format(landing=home / "landing"),
                out=home / "duckdb" / "sessions.parquet",
                gap=INACTIVITY_GAP_S,
            )
            stage.events = con.execute(sql).fetchone()[0]
        finally:
            con.close()
    print(f"  duckdb  {stage.events:>12,} events  {stage.seconds:7.1f} s", flush=True)
    return stage


# --- report ---------------------------------------------------------------------------------


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def print_report(
    stages: list[StageResult], jvm_s: float, duck: StageResult | None, received: int
) -> None:
    total = StageResult(
        "all stages",
        received,
        sum(s.seconds for s in stages),
        max(s.jvm_peak for s in stages),
        max(s.python_peak for s in stages),
        sum(s.cpu_seconds for s in stages),
    )
    rows = [*stages, total]
    if duck is not None:
        rows.append(duck)
    print()
    print(
        f"{'stage':<20}{'events':>12}{'seconds':>9}{'events/s':>11}{'CPU s':>8}"
        f"{'ev/CPU-s':>10}{'JVM GiB':>9}{'Python GiB':>11}"
    )
    for row in rows:
        rate = f"{row.events_per_s:,.0f}" if row.events else "-"
        per_cpu = f"{row.events / row.cpu_seconds:,.0f}" if row.events and row.cpu_seconds else "-"
        jvm = _gib(row.jvm_peak) if row is not duck else "-"
        print(
            f"{row.name:<20}{row.events:>12,}{row.seconds:>9.1f}{rate:>11}{row.cpu_seconds:>8.1f}"
            f"{per_cpu:>10}{jvm:>9}{_gib(row.python_peak):>11}"
        )
    print("Spark jobs, all days: " + ", ".join(f"{s.name} {s.spark_jobs}" for s in stages))
    print(
        "generated classes compiled / HotSpot compiling s, all days: "
        + ", ".join(f"{s.name} {s.generated_classes} / {s.jit_seconds:.1f}" for s in stages)
    )
    print(
        f"end-to-end (+{jvm_s:.1f} s JVM start): {received / (total.seconds + jvm_s):,.0f} events/s; "
        "all stages = titles + bronze + silver + gold"
    )
    if duck is not None:
        by_name = {s.name: s for s in stages}
        to_sessions = received / (by_name["bronze"].seconds + by_name["silver"].seconds)
        print(
            f"Spark / DuckDB events/s: landing→sessions (bronze+silver) "
            f"{to_sessions / duck.events_per_s:.3f}, all stages "
            f"{total.events_per_s / duck.events_per_s:.3f}"
        )
    print(
        f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
        f"(cores: {os.cpu_count()})"
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
    parser.add_argument(
        "--landing-format",
        choices=LANDING_FORMATS,
        default="jsonl",
        help="landing event files: JSON lines (default) or typed Parquet",
    )
    args = parser.parse_args(argv)

    home = (args.home or Path(tempfile.mkdtemp(prefix="reelfm-bench-", dir="/tmp"))).resolve()
    print(
        f"home {home}; landing {args.landing_format}; load average "
        f"{os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    try:
        dates = landing_days(
            args.events, args.days, args.bad_rate, home / "landing", args.landing_format
        )
        for leftover in ("lake", "spark-warehouse", "duckdb"):
            shutil.rmtree(home / leftover, ignore_errors=True)
        with PeakMemory() as memory:
            stages, jvm_s = run_spark(home, dates, args.cores, memory)
            duck = (
                None
                if args.skip_duckdb
                else run_duckdb(home, args.cores, memory, args.landing_format)
            )
        received = next(s.events for s in stages if s.name == "bronze")
        print_report(stages, jvm_s, duck, received)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Runs the selected scenarios with a progress bar, then prints and writes the results."""

from __future__ import annotations

import importlib.util
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import machine, scenarios, supervisor
from bench.context import BenchContext
from bench.results import Report, ScenarioResult
from bench.targets import evaluate


def run_bench(
    *, quick: bool, names: list[str], out_dir: Path, console: Console | None = None
) -> Report:
    console = console or Console()
    # Whatever the run starts dies with it, even when it is SIGKILLed (bench/supervisor.py).
    supervisor.supervise()
    modules: list[ModuleType] = [scenarios.load(n) for n in names]
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    report = Report(
        started_at=started.isoformat(timespec="seconds"), quick=quick, machine=machine.describe()
    )
    report.load["before"] = machine.load_snapshot()
    cpu_before = machine.cpu_times()
    t0 = time.monotonic()
    work_dir = Path(tempfile.mkdtemp(prefix="plantnotify-bench-"))
    supervisor.remove_at_exit(work_dir)
    ctx = BenchContext(quick=quick, out_dir=out_dir, work_dir=work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(getattr(m, "NEEDS_SERVICES", False) for m in modules):
        ctx.prepare_services()  # database and vhost, in the background

    total = sum(m.steps(quick) for m in modules)
    with Progress(
        TextColumn("[bold]{task.fields[scenario]:<20}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("starting", total=total, scenario="")

        for module in modules:
            result = ScenarioResult(name=module.NAME, title=module.TITLE)
            stepper = _Stepper(progress, task, module.NAME, module.steps(quick), result)
            s0 = stepper.t0
            ctx.step = stepper
            progress.update(task, scenario=module.NAME, description="starting")
            cpu0 = machine.cpu_times()
            missing = [m for m in getattr(module, "REQUIRES", ()) if not _importable(m)]
            try:
                if missing:
                    # A part that is not in this checkout yet: say so, measure nothing.
                    result.status = "unavailable"
                    result.error = f"needs {', '.join(missing)}, which is not installed"
                else:
                    module.run(ctx, result)
            except Exception as exc:
                result.status = "error"
                result.error = f"{type(exc).__name__}: {exc}"
                (out_dir / "logs").mkdir(parents=True, exist_ok=True)
                (out_dir / "logs" / f"{module.NAME}.error.txt").write_text(traceback.format_exc())
            finally:
                ctx.end_scenario()
            result.seconds = round(time.monotonic() - s0, 1)
            result.load = {
                "machine_cpu_busy": machine.cpu_busy_fraction(cpu0, machine.cpu_times()),
                **machine.load_snapshot(),
            }
            if result.status == "ok":
                try:
                    result.plots = [p.name for p in module.plot(result, out_dir)]
                except Exception as exc:
                    result.notes.append(f"plot failed: {type(exc).__name__}: {exc}")
            stepper.finish()
            report.scenarios[module.NAME] = result
        progress.update(task, description="done", scenario="")

    ctx.close()
    ctx.remove_scratch()
    report.seconds = round(time.monotonic() - t0, 1)
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    report.load["after"] = machine.load_snapshot()
    report.load["machine_cpu_busy"] = machine.cpu_busy_fraction(cpu_before, machine.cpu_times())
    why: dict[str, str] = {}
    for module in modules:
        explain = getattr(module, "explain_misses", None)
        if explain is not None:
            why.update(explain(report))
    report.targets = evaluate(report, why)
    paths = report.write(out_dir, stamp)
    print_summary(report, console)
    console.print(f"results: {', '.join(str(p) for p in paths)}")
    return report


def print_summary(report: Report, console: Console) -> None:
    m = report.machine
    console.print(
        f"\n[bold]machine[/]: {m['cpu_model']}, {m['cpu_cores']} cores, {m['ram_mib']} MiB, "
        f"kernel {m['kernel']}; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    )
    console.print(
        f"load average {report.load['before'].get('loadavg_1m')} before, "
        f"{report.load['after'].get('loadavg_1m')} after; machine CPU busy "
        f"{_pct(report.load.get('machine_cpu_busy'))} during the run ({report.seconds:.0f} s)"
    )
    scen = Table(title="scenarios", show_lines=False)
    for col in ("scenario", "status", "seconds", "CPU busy", "headline"):
        scen.add_column(col)
    for r in report.scenarios.values():
        headline = ", ".join(
            f"{k}={_short(v)}" for k, v in list(r.metrics.items())[:6] if not isinstance(v, dict)
        )
        scen.add_row(
            r.name,
            "ok"
            if r.status == "ok"
            else f"[{'yellow' if r.status == 'unavailable' else 'red'}]{r.status}: {r.error}[/]",
            f"{r.seconds:.0f}",
            _pct(r.load.get("machine_cpu_busy")),
            headline,
        )
    console.print(scen)
    table = Table(title="targets (one run, this machine)")
    for col in ("target", "measured", "wanted", "result"):
        table.add_column(col)
    colours = {"met": "green", "missed": "red", "not measured": "yellow"}
    for t in report.targets:
        table.add_row(
            t.description,
            t.measured,
            t.target,
            f"[{colours[t.status]}]{t.status}[/]" + (f" — {t.why}" if t.why else ""),
        )
    console.print(table)


class _Stepper:
    """Advances the progress bar by the scenario's declared steps; keeps the timeline."""

    def __init__(
        self, progress: Progress, task: TaskID, name: str, budget: int, result: ScenarioResult
    ) -> None:
        self.progress, self.task, self.name = progress, task, name
        self.budget, self.used, self.result = budget, 0, result
        self.t0 = time.monotonic()

    def __call__(self, description: str) -> None:
        self.result.timeline.append((description, round(time.monotonic() - self.t0, 2)))
        if self.used < self.budget:
            self.progress.advance(self.task)
            self.used += 1
        self.progress.update(self.task, description=description, scenario=self.name)

    def finish(self) -> None:
        self.progress.advance(self.task, self.budget - self.used)
        self.used = self.budget


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)

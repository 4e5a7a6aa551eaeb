"""`ember tune`: tuning a model's kernels (Ember's rule variants, MetaSchedule) into a database `ember compile
--tuning-db` reads."""

from __future__ import annotations

import click


def _progress_bar():
    """A rich progress bar with one row per kernel: trials done of planned, best latency so far."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best {task.fields[best]}"),
        TimeElapsedColumn(),
    )
    rows: dict[str, int] = {}

    def report(name: str, done: int, planned: int, best_ms: float | None) -> None:
        if name not in rows:
            rows[name] = bar.add_task(name[:48], total=planned, best="-")
        bar.update(rows[name], completed=done, best="-" if best_ms is None else f"{best_ms:.3f} ms")

    return bar, report


def register_tune_command(group: click.Group, handles_errors) -> None:
    """Add `ember tune` to the command group (errors handled as by every ember command)."""

    @group.command("tune")
    @click.argument("model", type=click.Path(dir_okay=False))
    @click.option("-t", "--target", default="host", show_default=True, help="A CPU target (see 'ember targets').")
    @click.option(
        "--trials",
        default=64,
        show_default=True,
        help="MetaSchedule measurements, split over kernels by FLOPs, after Ember's rule variants (0: those only).",
    )
    @click.option("--db", "db_dir", required=True, type=click.Path(file_okay=False), help="Tuning database directory.")
    @click.option(
        "--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...", help="Fix an input's shape."
    )
    @click.option("--rpc-tracker", metavar="HOST:PORT", help="Measure on devices registered with this RPC tracker.")
    @click.option("--rpc-key", help="Device key at the RPC tracker.")
    @handles_errors
    def tune_cmd(model, target, trials, db_dir, input_shapes, rpc_tracker, rpc_key) -> None:
        """Tune MODEL's kernels (Ember's rule variants, then MetaSchedule) into DB; compile with --tuning-db DB."""
        from ember.backends.tvm.quiet import native_stderr_captured
        from ember.backends.tvm.tuned import tune_model
        from ember.backends.tvm.tuning import check_tracker
        from ember.cli.main import parse_input_shapes
        from ember.errors import EmberError

        rpc = None
        if rpc_tracker or rpc_key:
            if not (rpc_tracker and rpc_key):
                raise EmberError("--rpc-tracker and --rpc-key go together", hint="pass both, or neither to tune here")
            rpc = check_tracker(rpc_tracker, rpc_key)
        bar, report = _progress_bar()
        with bar, native_stderr_captured():
            found = tune_model(
                model, target, trials, db_dir, parse_input_shapes(input_shapes), rpc=rpc, progress=report
            )
        for name, t in found.items():
            use = "ember rules"
            if t.db_wins:
                use = f"rule variant {_knobs(t.variant)}" if t.variant is not None else "metaschedule"
            click.echo(f"  {name[:48]:48} ember {_ms(t.baseline_s)}  tuned {_ms(t.best_s)}  -> {use}")
        trials_done = sum(t.trials for t in found.values())
        click.echo(f"tuned {len(found)} kernels with {trials_done} trials -> {db_dir}/")


def _knobs(knobs) -> str:
    """A rule variant's knobs that differ from the defaults, as name=value."""
    from dataclasses import fields

    default = type(knobs)()
    return " ".join(
        f"{f.name}={getattr(knobs, f.name)}"
        for f in fields(knobs)
        if getattr(knobs, f.name) != getattr(default, f.name)
    )


def _ms(seconds: float | None) -> str:
    """Seconds as a fixed-width milliseconds column ('-' when not measured)."""
    return "       -" if seconds is None else f"{1e3 * seconds:8.3f} ms"

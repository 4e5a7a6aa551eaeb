"""Pass-pipeline options shared by `ember compile` and `ember opt`, the folding options shared by every
command that imports, and the --time-passes table and notes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import click

from ember.ir.fold import FoldSkip, format_size
from ember.passes.instruments import PrintIR

FOLD_LIMIT_HELP = (
    "Largest tensor constant folding may create: bytes, or a size like 512k, 64MiB, 1GiB "
    "(k/M/G and KiB/MiB/GiB count in 1024s, kB/MB/GB in 1000s). Larger results are computed at run time; "
    "one-element results always fold, so 0 folds nothing bigger."
)


def pass_options(default_pipeline: str | None):
    """Decorate a command with the pipeline, plugin and instrument options."""

    def wrap(fn):
        opts = [
            click.option("--passes", default=default_pipeline, help="Comma-separated pass pipeline ('' runs none)."),
            click.option("-O", "opt_level", type=click.IntRange(0, 3), default=None, help="Optimization level 0-3."),
            click.option(
                "--pass-plugin",
                "plugins",
                multiple=True,
                type=click.Path(dir_okay=False),
                help="Python file registering passes (runs its code).",
            ),
            click.option("--verify-each", is_flag=True, help="Run the IR verifier after every pass."),
            click.option("--print-ir-before", "print_before", multiple=True, metavar="PASS"),
            click.option("--print-ir-after", "print_after", multiple=True, metavar="PASS"),
            click.option("--print-ir-after-all", "print_after_all", is_flag=True),
            click.option("--print-ir-after-change", "print_after_change", is_flag=True),
            click.option("--dump-ir", type=click.Path(file_okay=False), help="Write every stage's IR to DIR."),
            click.option("--time-passes", is_flag=True, help="Print time and node counts per pass."),
        ]
        for opt in reversed(opts):
            fn = opt(fn)
        return functools.wraps(fn)(fn)

    return wrap


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        logging.getLogger("ember").setLevel(logging.INFO)


def fold_options(fn):
    """Decorate a command that imports a model with --fold-limit and -v."""
    fn = click.option(
        "-v", "--verbose", is_flag=True, expose_value=False, callback=_verbose, help="Log what Ember skips and why."
    )(fn)
    return click.option("--fold-limit", default="64MiB", show_default=True, metavar="SIZE", help=FOLD_LIMIT_HELP)(fn)


def pipeline_of(passes: str | None, opt_level: int | None, default_level: int):
    if passes is not None:
        return passes
    return default_level if opt_level is None else opt_level


def printers(o: dict) -> list:
    if o["print_before"] or o["print_after"] or o["print_after_all"] or o["print_after_change"]:
        return [PrintIR(o["print_before"], o["print_after"], o["print_after_all"], o["print_after_change"])]
    return []


def time_table(records) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("pass", "time (ms)", "nodes before", "nodes after", "changed", title="pass timing")
    for r in records:
        table.add_row(
            r.name, f"{r.seconds * 1e3:.1f}", str(r.nodes_before), str(r.nodes_after), "yes" if r.changed else "no"
        )
    table.add_row("total", f"{sum(r.seconds for r in records) * 1e3:.1f}", "", "", "")
    Console(stderr=True, width=100).print(table)


def fold_notes(skips: Sequence[FoldSkip], shown: int = 5) -> None:
    """One stderr note per stage that skipped folds over the size cap, naming the first `shown` nodes."""
    groups: dict[tuple[str, int], list[FoldSkip]] = {}
    for skip in skips:
        groups.setdefault((skip.stage, skip.limit), []).append(skip)
    for (stage, limit), group in groups.items():
        listed = ", ".join(f"node '{s.node}' ({s.op}) {format_size(s.nbytes)}" for s in group[:shown])
        more = f", and {len(group) - shown} more" if len(group) > shown else ""
        folds = "fold" if len(group) == 1 else "folds"
        click.echo(
            f"note: {stage} skipped {len(group)} {folds} over the {format_size(limit)} cap: {listed}{more} "
            "(raise it with --fold-limit)",
            err=True,
        )

"""Pass-pipeline options shared by `ember compile` and `ember opt`, and the --time-passes table."""

from __future__ import annotations

import functools

import click

from ember.passes.instruments import PrintIR


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

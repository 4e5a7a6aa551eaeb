"""The `ember` command line: parse arguments, call the library, format the result."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import click
import numpy as np

from ember.cli.deploy import deploy_options
from ember.cli.deploy import register as register_deploy_commands
from ember.cli.errors import DEBUG, OneLineErrorsGroup, handles_errors
from ember.cli.passopts import fold_notes, fold_options, pass_options, pipeline_of, printers, time_table
from ember.cli.quantopts import print_quant_report, quant_kwargs, quant_options
from ember.cli.sparseopts import print_sparse_report, sparse_kwargs, sparse_options
from ember.cli.tune import register_tune_command
from ember.errors import EmberError
from ember.ir.fold import fold_scope, parse_size


class _StderrLog(logging.Handler):
    """Ember's log records as one 'warning: ...' line each on the stderr the command started with, which
    still reaches the terminal while a compile captures what TVM writes to fd 2."""

    def __init__(self) -> None:
        super().__init__()
        try:
            self.stream: TextIO | None = os.fdopen(os.dup(sys.stderr.fileno()), "w")
        except (AttributeError, OSError, ValueError):
            self.stream = None

    def emit(self, record: logging.LogRecord) -> None:
        stream = self.stream or sys.stderr
        stream.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
        stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        super().close()


def _log_to_stderr() -> None:
    """Warnings show by default; -v on a command lowers the level to INFO."""
    logger = logging.getLogger("ember")
    for old in [h for h in logger.handlers if isinstance(h, _StderrLog)]:
        logger.removeHandler(old)
        old.close()
    logger.addHandler(_StderrLog())
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def parse_input_shapes(specs: tuple[str, ...]) -> dict[str, list[int]]:
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = [int(d) for d in dims.split(",")]
            if any(d <= 0 for d in shapes[name]):
                raise ValueError
        except ValueError:
            raise EmberError(f"bad --input-shape '{spec}'", hint="write NAME:1,3,224,224 with positive dims") from None
    return shapes


@click.group(cls=OneLineErrorsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.version_option(package_name="ember", prog_name="ember")
def cli(debug: bool) -> None:
    """Ember: compile ONNX and PyTorch (.pt2) models into small, fast artifacts for ARM CPUs and edge GPUs."""
    DEBUG["on"] = debug
    _log_to_stderr()


def _default_out(model: str, target: str) -> Path:
    return Path(f"{Path(model).stem}-{target.replace('/', '-')}")


@cli.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-t", "--target", default="host", show_default=True, help="Triple, name or TVM tag (see 'ember targets')."
)
@click.option("-o", "--output", type=click.Path(), help="Bundle directory [default: MODEL-TARGET].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...", help="Fix an input's shape.")
@click.option(
    "--layout",
    type=click.Choice(["NCHW", "NHWC"], case_sensitive=False),
    help="Layout convolutions run in [default: the target's at -O2: NHWC on ARM CPUs, else NCHW].",
)
@click.option("--tuning-db", type=click.Path(file_okay=False), help="Use the kernels 'ember tune' stored here.")
@click.option(
    "--no-winograd",
    is_flag=True,
    help="Run 3x3 convs directly: Winograd's are faster but store 4x those layers' weight bytes.",
)
@deploy_options
@quant_options
@sparse_options
@pass_options(None)
@fold_options
@handles_errors
def compile_cmd(model, target, output, input_shapes, layout, tuning_db, no_winograd, standalone, verify, **o) -> None:
    """Compile MODEL (.onnx, .pt2 or .ir) for a target and write a bundle directory."""
    import ember
    from ember.backends.tvm.quiet import native_stderr_captured

    out = Path(output) if output else _default_out(model, target)
    limit = parse_size(o["fold_limit"], "--fold-limit")
    quant = quant_kwargs(o)
    start = time.perf_counter()
    artifact = None
    try:
        with native_stderr_captured(), fold_scope(limit) as folds:
            artifact = ember.compile(
                model,
                target,
                parse_input_shapes(input_shapes),
                passes=pipeline_of(o["passes"], o["opt_level"], 2),
                verify_each=o["verify_each"],
                instruments=printers(o),
                dump_ir=o["dump_ir"],
                pass_plugins=o["plugins"],
                layout=layout,
                tuning_db=tuning_db,
                winograd=not no_winograd,
                **quant,
                **sparse_kwargs(o),
            )
            compiled = time.perf_counter() - start
            artifact.save(out, standalone=standalone)
    finally:
        if o["time_passes"] and artifact is not None:
            time_table(artifact.pass_records)
            fold_notes(folds.skipped)
    print_quant_report(artifact)
    print_sparse_report(artifact)
    lib = out / artifact.metadata["library"]
    click.echo(f"compiled {Path(model).name} for {target} in {compiled:.1f}s -> {out}/")
    click.echo(f"  {lib.name}: {lib.stat().st_size / 1e6:.1f} MB  ({artifact.arch}, {artifact.device})")
    if standalone:
        click.echo(f"  standalone: runner and runtime/ for {artifact.arch}; copy {out}/ to the board, see README.txt")
    for kind in artifact.sources:
        click.echo(f"  kernel sources: {[p.name for p in out.glob('kernels.*')][0]} ({kind})")
    if lib.suffix == ".tar":
        cc = {"aarch64": "aarch64-linux-gnu-g++", "armv7": "arm-linux-gnueabihf-g++"}.get(artifact.arch, "g++")
        click.echo(
            f"  no {artifact.arch} linker here: {lib.name} holds object files. Link on the device with\n"
            f"    mkdir objs && tar -xf model.tar -C objs && g++ -shared -fPIC -o model.so objs/*.o\n"
            f"  or install {cc} and compile again."
        )
    if verify:
        from ember.cli.deploy import verify_bundle

        verify_bundle(artifact, model, out)


@cli.command("opt")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="OUT.ir (weights in OUT.npz) or OUT.onnx; default: IR text on stdout.",
)
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...", help="Fix an input's shape.")
@pass_options(None)
@fold_options
@handles_errors
def opt_cmd(source, output, input_shapes, **o) -> None:
    """Run passes over SOURCE (.onnx, .pt2 or .ir) and write the result, like mlir-opt."""
    from ember.cli.files import write_graph
    from ember.driver import import_model
    from ember.passes import PassManager
    from ember.passes.instruments import DumpIR
    from ember.passes.plugins import load_plugin

    for plugin in o["plugins"]:
        load_plugin(plugin)
    instruments = printers(o) + ([DumpIR(o["dump_ir"])] if o["dump_ir"] else [])
    manager = PassManager.from_spec(pipeline_of(o["passes"], o["opt_level"], 0), o["verify_each"], instruments)
    with fold_scope(parse_size(o["fold_limit"], "--fold-limit")) as folds:
        graph = import_model(source, parse_input_shapes(input_shapes))
        try:
            manager.run(graph)
        finally:
            if o["time_passes"]:
                time_table(manager.records)
                fold_notes(folds.skipped)
    write_graph(graph, output)


@cli.command("passes")
@click.option("--pass-plugin", "plugins", multiple=True, type=click.Path(dir_okay=False))
@handles_errors
def passes_cmd(plugins) -> None:
    """List registered passes, one line each: name and description."""
    from ember.passes import OPT_LEVELS, all_passes
    from ember.passes.plugins import load_plugin

    for plugin in plugins:
        load_plugin(plugin)
    infos = all_passes()
    width = max(len(p.name) for p in infos)
    for p in infos:
        origin = "" if p.origin == "ember" else f"  [{p.origin}]"
        click.echo(f"{p.name:<{width}}  {p.description}{origin}")
    click.echo("\nopt levels: " + "; ".join(f"-O{k}: {','.join(v) or '(none)'}" for k, v in OPT_LEVELS.items()))


@cli.command("inspect")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "dot", "html", "svg"]), default="text", show_default=True
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...", help="Fix an input's shape.")
@fold_options
@handles_errors
def inspect_cmd(source, fmt, output, input_shapes, fold_limit) -> None:
    """Show a model (.onnx, .pt2 or .ir) as Ember IR text, JSON, DOT, HTML or SVG."""
    from ember.atomic import write_text_atomic
    from ember.driver import import_model
    from ember.ir import render
    from ember.ir.printer import print_graph

    with fold_scope(parse_size(fold_limit, "--fold-limit")):
        graph = import_model(source, parse_input_shapes(input_shapes))
    if fmt == "text":
        counts = ", ".join(f"{op} {k}" for op, k in sorted(graph.op_counts().items(), key=lambda kv: -kv[1]))
        text = print_graph(graph, {}) + f"// {len(graph.nodes)} nodes: {counts}\n"
    elif fmt == "json":
        text = render.to_json(graph) + "\n"
    elif fmt == "dot":
        text = render.to_dot(graph)
    elif fmt == "html":
        text = render.to_html(graph)
    else:
        text = _svg(render.to_dot(graph))
    if output:
        write_text_atomic(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def _svg(dot_text: str) -> str:
    import shutil
    import subprocess

    if not shutil.which("dot"):
        raise EmberError("--format svg needs Graphviz's 'dot'", hint="apt-get install graphviz, or use --format html")
    return subprocess.run(["dot", "-Tsvg"], input=dot_text, capture_output=True, text=True, check=True).stdout


def _read_inputs(artifact, specs: tuple[str, ...]) -> dict[str, np.ndarray]:
    given = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            raise EmberError(f"bad --input '{spec}'", hint="write NAME=file.npy")
        try:
            array = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise EmberError(f"cannot read {file}: {e}", file=file) from None
        try:
            given[name] = artifact.check_input(name, array)
        except EmberError as e:
            raise e.with_file(file) from None
    if given:
        return given
    rng = np.random.default_rng(0)
    click.echo("no --input given: using random inputs (seed 0)", err=True)
    from ember.ir.dtypes import to_numpy

    return {
        i["name"]: rng.random([d if isinstance(d, int) else 1 for d in i["shape"]]).astype(to_numpy(i["dtype"]))
        for i in artifact.metadata["inputs"]
    }


@cli.command("run")
@click.argument("bundle", type=click.Path())
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", help="An input tensor.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write outputs to this .npz file.")
@click.option("--emulate", is_flag=True, help="Run an ARM bundle under qemu-user through the C++ runner.")
@click.option("--rpc", metavar="HOST:PORT", help="Run on the TVM RPC server at HOST:PORT (uploads model.so).")
@handles_errors
def run_cmd(bundle, inputs, output, emulate, rpc) -> None:
    """Run BUNDLE (host-runnable, CUDA on this machine's GPU, or with --emulate one for another CPU); print outputs."""
    import ember

    artifact = ember.load(bundle)
    feeds = _read_inputs(artifact, inputs)
    start = time.perf_counter()
    if rpc:
        from ember.backends.remote import run_remote

        outputs = run_remote(artifact, feeds, rpc)
    else:
        outputs = artifact.run(feeds, emulate=emulate)
    elapsed = (time.perf_counter() - start) * 1e3
    if output:  # before the report: a failure to write is then the command's only output
        from ember.cli.files import save_npz_atomic

        save_npz_atomic(output, outputs)
    for name, arr in outputs.items():
        summary = f"min {arr.min():.4g} max {arr.max():.4g} mean {arr.mean():.4g}" if arr.size else "empty"
        click.echo(f"{name}: {arr.dtype} {list(arr.shape)}  {summary}")
    click.echo(f"ran in {elapsed:.1f} ms ({'emulated, ' if emulate else ''}first run, includes loading)")
    if output:
        click.echo(f"outputs written to {output}")


@cli.command("bench")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-t", "--target", default="host", show_default=True, help="A target this machine can run.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...", help="Fix an input's shape.")
@click.option(
    "--threads", type=int, help="CPU threads for Ember and onnxruntime alike.  [default: one per physical core]"
)
@click.option("--runs", default=20, show_default=True, help="Timed runs of each, alternating.")
@click.option(
    "--per-op",
    is_flag=True,
    help="Also print the time of each kernel, slowest first (timed in a second build whose VM runs bytecode).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handles_errors
def bench_cmd(model, target, input_shapes, threads, runs, per_op, as_json) -> None:
    """Compile MODEL, then time Ember against onnxruntime on random inputs, in one process."""
    import json

    from ember.backends.tvm.quiet import native_stderr_captured
    from ember.bench import bench

    if runs < 1:
        raise EmberError(f"--runs must be at least 1, got {runs}")
    with native_stderr_captured():
        result = bench(model, target, parse_input_shapes(input_shapes), threads=threads, runs=runs, per_op=per_op)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    _print_bench(result)


def _print_bench(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=f"{result.model} on {result.target}, {result.threads} threads, {result.ember.runs} runs each")
    for col in ("", "median ms", "min ms", "max ms"):
        table.add_column(col, justify="right" if col else "left")
    for label, t in (("ember", result.ember), ("onnxruntime", result.onnxruntime)):
        if t is not None:
            table.add_row(label, f"{t.median:.3f}", f"{t.min:.3f}", f"{t.max:.3f}")
    console.print(table)
    if result.ratio is not None:
        console.print(f"ember / onnxruntime: {result.ratio:.2f}x   (compile {result.compile_s:.1f} s)")
    if result.kernels:
        total = sum(k.total_ms for k in result.kernels) or 1.0
        kt = Table(title="time per kernel (median run)")
        for col in ("kernel", "calls", "ms", "share"):
            kt.add_column(col, justify="left" if col == "kernel" else "right")
        for k in result.kernels:
            kt.add_row(k.name, str(k.calls), f"{k.total_ms:.3f}", f"{100 * k.total_ms / total:.1f}%")
        console.print(kt)


@cli.command("targets")
@handles_errors
def targets_cmd() -> None:
    """List target names and the TVM targets they map to."""
    from rich.console import Console
    from rich.table import Table

    from ember.backends.tvm.quiet import native_stderr_captured
    from ember.backends.tvm.targets import list_targets

    with native_stderr_captured():
        rows = list_targets()
    table = Table("target", "what", "TVM target")
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)


def main() -> None:
    if not any(arg.endswith(".pt2") for arg in sys.argv[1:]):
        # Only .pt2 models need torch; TVM's FFI imports it eagerly when it is installed, seconds per command.
        sys.modules.setdefault("torch", None)
    cli(prog_name="ember")


register_deploy_commands(cli, handles_errors)
register_tune_command(cli, handles_errors)


if __name__ == "__main__":
    main()

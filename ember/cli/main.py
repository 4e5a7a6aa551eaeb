"""The `ember` command line: parse arguments, call the library, format the result."""

from __future__ import annotations

import functools
import sys
import time
import traceback
from pathlib import Path

import click
import numpy as np

from ember.errors import EmberError

DEBUG = {"on": False}


def _fail(message: str, code: int = 2):
    click.echo(f"ember: error: {message}", err=True)
    sys.exit(code)


def handles_errors(fn):
    """Turn EmberError into one line on stderr and exit 2; other exceptions into a short internal-error line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EmberError as e:
            if DEBUG["on"]:
                traceback.print_exc()
            _fail(str(e))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # a bug in Ember: say so in one line unless debugging
            if DEBUG["on"]:
                traceback.print_exc()
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            _fail(f"internal error: {type(e).__name__}: {first} (rerun with --debug and report it)", 1)

    return wrapper


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.version_option(package_name="ember", prog_name="ember")
def cli(debug: bool) -> None:
    """Ember: compile ONNX models into small, fast artifacts for ARM CPUs and edge GPUs."""
    DEBUG["on"] = debug


def _default_out(model: str, target: str) -> Path:
    return Path(f"{Path(model).stem}-{target.replace('/', '-')}")


@cli.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option(
    "-t", "--target", default="host", show_default=True, help="Triple, name or TVM tag (see 'ember targets')."
)
@click.option("-o", "--output", type=click.Path(), help="Bundle directory [default: MODEL-TARGET].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:D0,D1,...", help="Fix an input's shape.")
@click.option("--passes", default=None, help="Comma-separated pass pipeline (overrides -O).")
@click.option("-O", "opt_level", type=click.IntRange(0, 3), default=2, show_default=True, help="Optimization level.")
@handles_errors
def compile_cmd(model, target, output, input_shapes, passes, opt_level) -> None:
    """Compile MODEL (.onnx) for a target and write a bundle directory."""
    import ember
    from ember.backends.tvm.quiet import native_stderr_captured

    out = Path(output) if output else _default_out(model, target)
    start = time.perf_counter()
    with native_stderr_captured():
        artifact = ember.compile(
            model, target, parse_input_shapes(input_shapes), passes=passes if passes is not None else opt_level
        )
        compiled = time.perf_counter() - start
        artifact.save(out)
    lib = out / artifact.metadata["library"]
    click.echo(f"compiled {Path(model).name} for {target} in {compiled:.1f}s -> {out}/")
    click.echo(f"  {lib.name}: {lib.stat().st_size / 1e6:.1f} MB  ({artifact.arch}, {artifact.device})")
    for kind in artifact.sources:
        click.echo(f"  kernel sources: {[p.name for p in out.glob('kernels.*')][0]} ({kind})")
    if lib.suffix == ".tar":
        cc = {"aarch64": "aarch64-linux-gnu-g++", "armv7": "arm-linux-gnueabihf-g++"}.get(artifact.arch, "g++")
        click.echo(
            f"  no {artifact.arch} linker here: {lib.name} holds object files. Link on the device with\n"
            f"    mkdir objs && tar -xf model.tar -C objs && g++ -shared -fPIC -o model.so objs/*.o\n"
            f"  or install {cc} and compile again."
        )


def _read_inputs(artifact, specs: tuple[str, ...]) -> dict[str, np.ndarray]:
    given = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            raise EmberError(f"bad --input '{spec}'", hint="write NAME=file.npy")
        try:
            given[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise EmberError(f"cannot read {file}: {e}", file=file) from None
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
@handles_errors
def run_cmd(bundle, inputs, output) -> None:
    """Run a host-runnable BUNDLE and print its outputs."""
    import ember

    artifact = ember.load(bundle)
    feeds = _read_inputs(artifact, inputs)
    start = time.perf_counter()
    outputs = artifact.run(feeds)
    elapsed = (time.perf_counter() - start) * 1e3
    for name, arr in outputs.items():
        summary = f"min {arr.min():.4g} max {arr.max():.4g} mean {arr.mean():.4g}" if arr.size else "empty"
        click.echo(f"{name}: {arr.dtype} {list(arr.shape)}  {summary}")
    click.echo(f"ran in {elapsed:.1f} ms (first run, includes loading)")
    if output:
        from ember.cli.files import save_npz_atomic

        save_npz_atomic(output, outputs)
        click.echo(f"outputs written to {output}")


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
    cli(prog_name="ember")


if __name__ == "__main__":
    main()

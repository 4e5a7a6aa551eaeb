"""Commands for getting bundles onto boards: `ember runtime fetch|list` and `ember doctor`."""

from __future__ import annotations

import json
from collections.abc import Callable

import click


def _runtime_group(handles_errors: Callable) -> click.Group:
    @click.group("runtime")
    def runtime() -> None:
        """TVM runtimes for other CPUs, which emulated runs and --standalone bundles need."""

    @runtime.command("fetch")
    @click.option("--arch", default="aarch64", show_default=True, help="CPU architecture (aarch64, or the host's).")
    @click.option("--refresh", is_flag=True, help="Download it again even when it is cached.")
    @handles_errors
    def fetch_cmd(arch: str, refresh: bool) -> None:
        """Download (or find) the TVM runtime for ARCH and print where it is cached."""
        from ember.backends.runtime import WHEEL_PLATFORM, fetch, runtime_dir

        _print_runtime(fetch(arch, refresh=True) if refresh and arch in WHEEL_PLATFORM else runtime_dir(arch))

    @runtime.command("list")
    @handles_errors
    def list_cmd() -> None:
        """The runtimes in the cache, with their versions."""
        from ember.backends.runtime import cache_root, cached

        found = cached()
        for r in found:
            versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items()) or "no manifest"
            click.echo(f"{r['arch']:<8} {'ok   ' if r['usable'] else 'stale'} {r['path']}  ({versions})")
        if not found:
            click.echo(f"no runtimes in {cache_root()}; get one with 'ember runtime fetch --arch aarch64'")

    return runtime


def _print_runtime(folder) -> None:
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else {}
    click.echo(f"runtime cached in {folder}")
    for name, v in manifest.get("versions", {}).items():
        click.echo(f"  {name} {v}")
    from ember.backends.artifact import sha256_file

    for lib in sorted((folder / "lib").iterdir()):
        click.echo(f"  lib/{lib.name}  sha256 {sha256_file(lib)}")


def _doctor_cmd(handles_errors: Callable) -> click.Command:
    @click.command("doctor")
    @click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
    @handles_errors
    def doctor(as_json: bool) -> None:
        """Report which compilers, emulators, runtimes, GPU stacks and packages are usable here, and the
        command that gets each missing one. Always exits 0: it is a report."""
        from ember.backends.tvm.quiet import native_stderr_captured
        from ember.doctor import diagnose

        with native_stderr_captured():
            report = diagnose()
        if as_json:
            click.echo(json.dumps({k: [c.to_json() for c in v] for k, v in report.items()}, indent=2))
            return
        _print_doctor(report)

    return doctor


def _print_doctor(report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("", "component", "found", "to get it", title="ember doctor")
    for checks in report.values():
        for c in checks:
            table.add_row("[green]ok[/]" if c.ok else "[red]missing[/]", c.component, c.detail, c.fix)
        table.add_section()
    Console(width=200).print(table)
    missing = sum(not c.ok for checks in report.values() for c in checks)
    click.echo(f"{missing} missing" if missing else "everything is installed")


def deploy_options(fn: Callable) -> Callable:
    """`ember compile`'s --standalone and --verify."""
    fn = click.option(
        "--verify",
        is_flag=True,
        help="Then run the bundle on seeded random inputs (here, or under qemu for ARM) and compare with "
        "onnxruntime (rtol 1e-4, atol 1e-5 scaled by the output's magnitude); exits 2 on a mismatch and also when "
        "it cannot run here (GPU target, no qemu, an .ir model), so a script never mistakes 'not checked' for "
        "'checked'. The bundle stays written either way.",
    )(fn)
    return click.option(
        "--standalone",
        is_flag=True,
        help="Also put the target's TVM runtime and a runner built for it in the bundle (CPU targets): copy the "
        "folder to a board and run it there without Python.",
    )(fn)


def verify_bundle(artifact, model: str, out) -> None:
    """compile --verify: run the saved bundle against onnxruntime; a failure keeps the bundle and says so."""
    from ember.backends.verify import verify
    from ember.errors import EmberError

    try:
        result = verify(artifact, model)
    except EmberError as e:
        raise EmberError(f"--verify: {e} (the bundle is written: {out}/)") from None
    worst = max(result.max_abs_error.values(), default=0.0)
    each = ", ".join(f"{k} {v:.3g}" for k, v in result.max_abs_error.items())
    click.echo(f"verified against onnxruntime ({result.how}, seed 0): max abs error {worst:.3g}  ({each})")


def register(cli: click.Group, handles_errors: Callable) -> None:
    """Add these commands to the `ember` group (main.py passes its error handler in)."""
    cli.add_command(_runtime_group(handles_errors))
    cli.add_command(_doctor_cmd(handles_errors))

"""`ember compile`'s quantization options, and the report it prints after a quantized compile."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ember.errors import EmberError


def quant_options(fn: Callable) -> Callable:
    """--quantize, --calibration, --calibration-method, --per-channel/--per-tensor, --skip-ops, --evaluation."""
    options = [
        click.option(
            "--skip-ops",
            "skip_ops",
            multiple=True,
            metavar="NAMES",
            help="Node names or op types that stay float (comma-separated or repeated).",
        ),
        click.option(
            "--per-channel/--per-tensor",
            default=True,
            show_default=True,
            help="One weight scale per output channel, or one per layer.",
        ),
        click.option(
            "--calibration-method",
            type=click.Choice(["minmax", "percentile", "entropy"]),
            default="percentile",
            show_default=True,
            help="How activation ranges are chosen (percentile: 99.99th; entropy: KL histogram search).",
        ),
        click.option(
            "--evaluation",
            type=click.Path(exists=False),
            metavar="DATA",
            help="Samples (as for --calibration) the accuracy report is measured on [default: the calibration set].",
        ),
        click.option(
            "--calibration",
            type=click.Path(exists=False),
            metavar="DATA",
            help="Calibration samples: an .npz keyed by input name with a leading sample axis, or a folder of "
            ".npz/.npy files, one sample each.",
        ),
        click.option(
            "--quantize", type=click.Choice(["int8"]), help="Quantize conv/dense layers after calibrating (int8)."
        ),
    ]
    for option in options:
        fn = option(fn)
    return fn


def quant_kwargs(o: dict[str, Any]) -> dict[str, Any]:
    """ember.compile's quantization arguments from the parsed options (which this pops from `o`)."""
    quantize, calibration, evaluation = o.pop("quantize"), o.pop("calibration"), o.pop("evaluation")
    method, per_channel = o.pop("calibration_method"), o.pop("per_channel")
    skip = tuple(s.strip() for group in o.pop("skip_ops") for s in group.split(",") if s.strip())
    if quantize is None:
        if calibration or evaluation or skip:
            raise EmberError("--calibration, --evaluation and --skip-ops apply with --quantize int8")
        return {}
    if calibration is None:
        raise EmberError("--quantize int8 needs --calibration DATA", hint="an .npz or a folder of samples")
    return dict(
        quantize=quantize,
        calibration=calibration,
        calibration_method=method,
        per_channel=per_channel,
        skip_ops=skip,
        evaluation=evaluation,
    )


def print_quant_report(artifact: Any) -> None:
    if getattr(artifact, "quant_report", None) is not None:
        from ember.passes.quantize import print_report

        print_report(artifact.quant_report)

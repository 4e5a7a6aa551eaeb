"""Post-training int8 quantization: calibration, the integer rewrite of conv/dense layers, QDQ model import and
the accuracy report. Plain strings in (arch, features): passes never import a backend."""

from ember.passes.quantize.apply import MODES, quantize_graph, target_features
from ember.passes.quantize.calibrate import METHODS, load_samples
from ember.passes.quantize.report import QuantReport, print_report, sqnr_db
from ember.passes.quantize.scheme import Scheme, scheme_for_target

__all__ = [
    "METHODS",
    "MODES",
    "QuantReport",
    "Scheme",
    "load_samples",
    "print_report",
    "quantize_graph",
    "scheme_for_target",
    "sqnr_db",
    "target_features",
]

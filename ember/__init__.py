"""Ember: an edge model compiler. ONNX or PyTorch in, a small fast artifact for ARM CPUs and edge GPUs out."""

from ember.errors import EmberError

__version__ = "0.1.0"


def compile(model, target="host", input_shapes=None, **options):  # noqa: A001
    """Compile `model` (ONNX or .pt2 path, ModelProto, torch.nn.Module with `example_inputs=(x,)`, or an Ember
    Graph) for `target`; returns an Artifact."""
    from ember.driver import compile as _compile

    return _compile(model, target, input_shapes, **options)


def load(directory):
    """Open a saved bundle as an Artifact."""
    from ember.backends.artifact import load as _load

    return _load(directory)


__all__ = ["EmberError", "__version__", "compile", "load"]

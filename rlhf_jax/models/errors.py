"""Errors raised when a checkpoint or model config does not fit what was expected."""


class CheckpointError(ValueError):
    """A checkpoint file, tensor or config entry does not match what the model expects.

    Messages always name the file, the tensor or key, and what was expected.
    """


class UnsupportedModelError(CheckpointError):
    """The checkpoint describes a model family or feature this library cannot build."""

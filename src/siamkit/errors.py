"""Exceptions raised by siamkit. Every message names the input and what was expected.

The CLI catches :class:`SiamkitError` and prints its message as one line, without a traceback.
"""


class SiamkitError(Exception):
    """Base class of every error siamkit raises on purpose."""


class ConfigError(SiamkitError, ValueError):
    """A configuration (YAML recipe, model config.json, component spec) is invalid."""


class DataError(SiamkitError, ValueError):
    """Input data is unusable: unreadable file, wrong shape, empty dataset, NaN values..."""


class CheckpointError(SiamkitError):
    """A model folder or checkpoint is missing, corrupt, or does not match the model."""


class GalleryError(SiamkitError):
    """A gallery operation failed: empty gallery, duplicate identity, wrong dimension..."""

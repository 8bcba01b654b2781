"""Run an exported siamkit model without PyTorch: ONNX Runtime, numpy, Pillow and tokenizers.

``pip install 'siamkit[runtime]'``, then :func:`load_onnx` on a folder from ``siamkit export``
gives the ``embed`` / ``score`` / ``pairwise`` / ``decide`` API of ``siamkit.load``; on the
command line, ``python -m siamkit.runtime verify FOLDER A B``. Importing this package never
imports torch.
"""

from siamkit.runtime.model import OnnxModel, load_onnx

__all__ = ["OnnxModel", "load_onnx"]

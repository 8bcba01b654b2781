"""siamkit: Siamese (twin) neural networks on PyTorch, from pairs to a served gallery."""

from siamkit.model import Model, load, save_model
from siamkit.siamese import SiameseNetwork

__version__ = "0.1.0"
__all__ = ["Model", "SiameseNetwork", "__version__", "load", "save_model"]

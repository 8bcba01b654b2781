"""Data: labelled sets, splits, pairs, triplets, episodes, batches, transforms and readers."""

import siamkit.data.faces  # noqa: F401  (registers the "att_faces" dataset)
import siamkit.data.signatures  # noqa: F401  (registers the "signatures" dataset)
from siamkit.data import omniglot  # noqa: F401  (registers the "omniglot" dataset)
from siamkit.data.datasets import DATASETS, build_dataset
from siamkit.data.labelled import LabelledData, Splits

__all__ = ["DATASETS", "LabelledData", "Splits", "build_dataset"]

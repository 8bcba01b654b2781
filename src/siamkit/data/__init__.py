"""Data: labelled sets, splits, pairs, triplets, episodes, batches, transforms and readers."""

from siamkit.data.datasets import DATASETS, build_dataset
from siamkit.data.labelled import LabelledData, Splits

__all__ = ["DATASETS", "LabelledData", "Splits", "build_dataset"]

"""Evaluation: verification (ROC, EER, threshold), few-shot episodes, plots, task evaluators."""

from siamkit.evaluation.embedding import embed_all

__all__ = ["embed_all"]

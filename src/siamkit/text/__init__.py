"""Text tasks on siamese text models: similarity and the STS protocol, matching/retrieval,
classification by labelled references, paraphrase detection, and sentence-pair training."""

from siamkit.text.classification import classify_texts, fewshot_text_accuracy
from siamkit.text.matching import TextMatch, rank_references
from siamkit.text.paraphrase import paraphrase_report, paraphrase_threshold
from siamkit.text.similarity import embed_texts, evaluate_sts, similarity

__all__ = [
    "TextMatch",
    "classify_texts",
    "embed_texts",
    "evaluate_sts",
    "fewshot_text_accuracy",
    "paraphrase_report",
    "paraphrase_threshold",
    "rank_references",
    "similarity",
]

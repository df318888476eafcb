"""Reviews -> training pairs (JSONL). Never imports torch or textual."""

from .pairs import (
    ExportResult,
    TrainingPair,
    export_pairs,
    parse_replay,
    prompt_text,
    read_pairs,
    stratified_sample,
)

__all__ = [
    "ExportResult",
    "TrainingPair",
    "export_pairs",
    "parse_replay",
    "prompt_text",
    "read_pairs",
    "stratified_sample",
]

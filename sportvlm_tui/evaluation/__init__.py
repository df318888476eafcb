"""Evaluation: label accuracy (exact and lenient), zero-shot vs fine-tuned, blind caption
grades, and the report. Reads the database only; never imports torch or textual."""

from .grading import caption_results
from .labels import Condition, compare, group_result
from .matching import LabelMatcher, normalise
from .report import Report, build_report, render, to_markdown, write_report

__all__ = [
    "Condition", "LabelMatcher", "Report", "build_report", "caption_results", "compare",
    "group_result", "normalise", "render", "to_markdown", "write_report",
]

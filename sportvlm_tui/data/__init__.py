"""Ingest: find images (100SIC layout or plain folders), validate them, store them.

Never imports torch or textual, so `sportvlm ingest` starts fast and can run on any box.
"""

from .pipeline import IngestSummary, ingest
from .sources import IMAGE_SUFFIXES, SPLITS, Candidate, Listing, SourceError, discover
from .validate import BadImage, ImageInfo, inspect_file

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLITS",
    "BadImage",
    "Candidate",
    "ImageInfo",
    "IngestSummary",
    "Listing",
    "SourceError",
    "discover",
    "ingest",
    "inspect_file",
]

"""The bundled QLoRA trainer for IDEFICS: `python -m training --pairs FILE --out-dir DIR`.

Importing this package is light (no torch); the loop imports it when it runs.
"""

from .config import ConfigError, TrainConfig

__all__ = ["ConfigError", "TrainConfig"]

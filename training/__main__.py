"""`python -m training` (also under `accelerate launch -m training`)."""

import sys

from .cli import run

sys.exit(run())

"""sportvlm-tui: label images with a vision-language model in the loop, from the terminal."""

__version__ = "0.1.0"

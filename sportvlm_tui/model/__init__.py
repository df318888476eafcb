"""The model layer: loading (nf4/bf16, adapters), the tiny built-in model, batched prediction.

Imports torch/transformers lazily (inside functions), so importing this package is cheap.
"""

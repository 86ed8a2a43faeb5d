"""The JinaBERT cross-encoder in plain PyTorch: its configuration, its layers and how they attend.

The bottom layer: it knows nothing of files, tokenization or batching. ``jinabert.py`` is the readable
specification; ``attention.py`` holds the ways one pass attends; ``row_blocks.py``, ``cpu_kernels.py`` and
``quantization.py`` are the CPU numerics the low-precision modes swap in.
"""

"""What tests, examples and benchmarks build their models from: random-weight checkpoints in the real format,
and a small reranker trained on the standard library's docstrings, whose rankings mean something."""

"""Benchmarks of perceptra-seg against Meta's reference predictors and transformers' own processor + model path.

Entry point: ``python -m bench.run [--quick] [--out bench/results]`` (see ``bench/README.md``). Every measured
configuration runs in its own subprocess (``python -m bench.worker``) so that peak-memory figures do not mix.
"""

"""astro-rmaat: shared plumbing for the three stages.

This package holds only what every stage needs and none of the science: user-facing
errors, atomic run directories and their ``meta.json``, config loading, the two file
formats that cross stage boundaries (``traces.parquet`` and ``retention.json``), the
matplotlib style, the lazy ``rmaat`` command line and the end-to-end pipeline.
It imports neither brian2 nor torch.
"""

__version__ = "0.1.0"

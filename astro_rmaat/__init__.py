"""astro-rmaat: the shared base of the three stages.

This package holds only what every stage needs and none of the science: user-facing
errors, atomic run directories and their ``meta.json``, config loading, the two file
formats that cross stage boundaries (``traces.parquet`` and ``retention.json``) and the
matplotlib style. It imports neither brian2 nor torch, and nothing from a stage or from
the application (``rmaat_app``) above them.
"""

__version__ = "0.1.0"

"""The application above the three stages: the ``rmaat`` command, the end-to-end pipeline
(simulate -> fit -> train) and its report.

Layers, bottom to top: ``astro_rmaat`` (shared base) <- ``astro_sim``, ``distill``,
``rmaat_model`` (the stages, which meet only at files) <- ``rmaat_app``. Nothing below
imports from here.
"""

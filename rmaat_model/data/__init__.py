"""Long Range Arena data: loaders (torch Datasets) for the official files, and the synthetic tasks.

Import the task modules directly (``rmaat_model.data.listops`` ...); ``base.load_split``
dispatches by task name and imports only the module it needs. The ListOps and Pathfinder
generators (``rmaat generate``) are the torch-free subpackage ``rmaat_model.data.generate``.
"""

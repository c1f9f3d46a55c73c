"""Long Range Arena data: ListOps and Pathfinder generators, loaders for the official files.

Import the task modules directly (``rmaat_model.data.listops`` ...); ``base.load_split``
dispatches by task name and imports only the module it needs.
"""

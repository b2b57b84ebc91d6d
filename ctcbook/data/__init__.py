"""Datasets as in-memory :class:`ImageSet` objects, loaded from local files only."""
from .images import ImageSet, select_classes, subsample, to_format, unseen_subset
from .sources import DataCorruptError, DataNotFoundError, available_datasets, load_dataset

__all__ = ["ImageSet", "DataCorruptError", "DataNotFoundError", "available_datasets", "load_dataset",
           "select_classes", "subsample", "to_format", "unseen_subset"]

"""Task adapters: what a user with a trained model brings, turned into a `autocompress.task.Task`.

`ClassificationTask` takes a classifier and its train/val/test DataLoaders; `FunctionTask` takes plain
functions for anything else. Both accept models with several inputs (batches as tuples or dicts).
"""

from autocompress.tasks._classification import ClassificationTask, cross_entropy, top1_accuracy
from autocompress.tasks._functions import FunctionTask

__all__ = ["ClassificationTask", "FunctionTask", "cross_entropy", "top1_accuracy"]

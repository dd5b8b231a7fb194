"""autocompress: search per-layer pruning and bit-widths for a trained PyTorch model, measure every candidate
honestly, store every trial, and export the best one as a real, smaller, faster model."""

from autocompress._sensitivity import Sensitivity, SensitivityRow, sensitivity
from autocompress._torchvision import import_torchvision  # its import puts the torchvision shim in place
from autocompress.errors import UserError
from autocompress.study import Study, load_study, resume, search

__version__ = "0.1.0"

__all__ = [
    "Sensitivity",
    "SensitivityRow",
    "Study",
    "UserError",
    "import_torchvision",
    "load_study",
    "resume",
    "search",
    "sensitivity",
]

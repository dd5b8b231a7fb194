"""Import torchvision beside the pinned CPU torch.

torchvision from PyPI's default index is built for the CUDA torch (its version says ``+cu130``). Beside the
CPU torch its compiled ops (``nms``, ``roi_align``: the ``_C`` extension) cannot load, and its package import
then fails in ``torchvision._meta_registrations``, which registers meta kernels for exactly those ops
("operator torchvision::nms does not exist"). ``transformers`` imports torchvision when it is installed, so
the same error stops ``import transformers`` too. The classification models are plain Python and need none
of the compiled ops: with an empty module standing in for ``torchvision._meta_registrations`` the package
imports and every classification builder works (the detection ops still do not).

`install_shim` puts that empty module in place, only when torchvision is installed, not yet imported and
built for CUDA while torch is not. Importing this module calls it (``import autocompress`` does), so
transformers imports in any process that imported autocompress first. A CPU build of torchvision (from
PyTorch's own index) is left alone.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path

import torch

SHIMMED = "torchvision._meta_registrations"


def install_shim() -> None:
    """Stand an empty module in for ``torchvision._meta_registrations`` when torchvision's compiled ops cannot
    load beside this torch (a CUDA build beside a CPU torch); a no-op once torchvision is imported."""
    if SHIMMED in sys.modules or "torchvision" in sys.modules or not _cuda_build_beside_cpu_torch():
        return
    sys.modules[SHIMMED] = types.ModuleType(SHIMMED, "empty: torchvision's compiled ops cannot load beside a CPU torch")


def import_torchvision() -> types.ModuleType:
    """``import torchvision`` with the shim in place where it is needed; the module, for its ``models``."""
    install_shim()
    import torchvision

    return torchvision


def _cuda_build_beside_cpu_torch() -> bool:
    """Whether the installed torchvision (if any) is a CUDA build while torch is a CPU one, read from
    torchvision's ``version.py`` without importing it."""
    if torch.version.cuda is not None:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    if not version_file.exists():
        return False
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text())
    return bool(match and "+cu" in match.group(1))


install_shim()  # at import: before anything imports transformers, which imports torchvision when installed

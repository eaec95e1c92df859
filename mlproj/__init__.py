"""mlproj: a Sacred-integrated experiment template for PyTorch.

    from mlproj import MLProject, Model, ClassificationModel, DatasetFactory

Names are imported on first use, so `import mlproj` (and `./main.py print_config`) stays fast and
never loads torch, torchvision or the datasets until they are needed.
"""

import warnings
from importlib import import_module
from typing import Any

# sacred 0.8.7 imports pkg_resources, which setuptools<81 (pinned for it) marks deprecated on import.
# Installed here, before any mlproj module can import sacred, so no `mlproj` command and no script
# that imports mlproj first prints it.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from mlproj.errors import MLProjError  # noqa: E402

__version__ = "0.1.0"

_EXPORTS = {
    "MLProject": "mlproj.train.loop",
    "TrainState": "mlproj.train.loop",
    "Model": "mlproj.train.model",
    "ClassificationModel": "mlproj.train.model",
    "SimpleModel": "mlproj.train.model",
    "Callback": "mlproj.train.callbacks",
    "EarlyStopping": "mlproj.train.callbacks",
    "DatasetFactory": "mlproj.data",
    "register_dataset": "mlproj.data",
    "create_experiment": "mlproj.record.experiment",
    "load_run": "mlproj.loading",
}

__all__ = ["MLProjError", "__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlproj' has no attribute {name!r}")

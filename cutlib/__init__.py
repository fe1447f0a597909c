"""cutlib: Contrastive Unpaired Translation (CUT) for photo -> Monet, as a small importable library."""
from .config import ConfigError, TrainConfig
from .data import DataError, make_demo_data
from .checkpoint import CheckpointError

__all__ = ["TrainConfig", "ConfigError", "DataError", "CheckpointError", "make_demo_data"]
__version__ = "0.1.0"

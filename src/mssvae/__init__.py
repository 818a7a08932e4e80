"""mssvae: multi-study sparse variational autoencoder (Moran & Krishnan, "Nonlinear multi-study
factor analysis").  Shared and study-specific sparse gene programs from several studies."""

__version__ = "0.1.0"

from .model import MSSVAE
from .training import TrainingDivergedError

__all__ = ["MSSVAE", "TrainingDivergedError", "__version__"]

"""Input layer: safetensors checkpoints as lazy, validated, hashed tensors."""

from audit.checkpoint.checkpoint import Checkpoint, InputFile, open_checkpoint
from audit.checkpoint.dtypes import DTYPES
from audit.checkpoint.tensor import Moments, StoredTensor, TensorView, moments_of

__all__ = ["DTYPES", "Checkpoint", "InputFile", "Moments", "StoredTensor", "TensorView", "moments_of", "open_checkpoint"]

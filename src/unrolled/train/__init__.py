"""Training loops and checkpoints for the library's own models."""

from unrolled.train.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from unrolled.train.loop import NonFiniteLossError, TrainResult, final_layer_mse, train

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "atomic_write_json",
    "atomic_write_text",
    "final_layer_mse",
    "load_checkpoint",
    "save_checkpoint",
    "train",
]

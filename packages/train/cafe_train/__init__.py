"""cafe_train: the typed training config, the shard-to-batch loader, the loop and its checkpoints.

from cafe_train import TrainConfig, inference_weights, train
result = train(TrainConfig(shards=["out/triples"], output_dir="runs/tiny", preset="tiny", max_steps=100))
model.load_trainable_state_dict(inference_weights(result.last_checkpoint))   # EMA weights when the run kept them
"""

from cafe_train.checkpoint import inference_weights, latest_checkpoint, list_checkpoints
from cafe_train.config import TrainConfig, check_shards
from cafe_train.loop import TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "check_shards",
    "inference_weights",
    "latest_checkpoint",
    "list_checkpoints",
    "train",
]

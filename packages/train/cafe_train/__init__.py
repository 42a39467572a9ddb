"""cafe_train: the typed training config, the shard-to-batch loader, the loop and its checkpoints.

from cafe_train import TrainConfig, train
result = train(TrainConfig(shards=["out/triples"], output_dir="runs/tiny", preset="tiny", max_steps=100))
"""

from cafe_train.checkpoint import latest_checkpoint, list_checkpoints
from cafe_train.config import TrainConfig, check_shards
from cafe_train.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "check_shards", "latest_checkpoint", "list_checkpoints", "train"]

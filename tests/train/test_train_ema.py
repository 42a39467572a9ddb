"""The EMA of the trainable parameters: its update rule, its state, and a run's EMA following its weights."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import tiny_config

from cafe_model.load import load_model
from cafe_train import list_checkpoints, train
from cafe_train.checkpoint import EMA_NAME, TRAINABLE_NAME, inference_weights
from cafe_train.ema import ParameterEMA


def test_ema_update_matches_a_hand_rolled_average() -> None:
    decay = 0.9
    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ema = ParameterEMA({"w": weight}, decay)
    expected = weight.detach().clone()
    for value in ([3.0, 0.0], [-1.0, 4.0], [0.5, 0.5]):
        with torch.no_grad():
            weight.copy_(torch.tensor(value))
        ema.update({"w": weight})
        expected = decay * expected + (1 - decay) * torch.tensor(value)
        torch.testing.assert_close(ema.state_dict()["w"], expected)
    assert not torch.equal(ema.state_dict()["w"], weight.detach())  # a copy, not the parameter


def test_ema_state_round_trips_and_refuses_other_names() -> None:
    ema = ParameterEMA({"a": torch.zeros(2), "b": torch.ones(3)}, 0.5)
    other = ParameterEMA({"a": torch.full((2,), 7.0), "b": torch.full((3,), 7.0)}, 0.5)
    other.load_state_dict(ema.state_dict())
    assert all(torch.equal(other.state_dict()[n], t) for n, t in ema.state_dict().items())
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        other.load_state_dict({"a": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"decay=1\.0"):
        ParameterEMA({}, 1.0)


@pytest.mark.slow
def test_run_ema_follows_its_weights_step_by_step(tmp_path: Path, four_triples: Path, model_cache: Path) -> None:
    """A checkpoint after every step: ema_k = d * ema_(k-1) + (1 - d) * weights_k, from ema_0 = the initial weights."""
    decay, num_steps = 0.8, 3
    config = tiny_config(
        four_triples,
        tmp_path / "run",
        model_cache,
        max_steps=num_steps,
        checkpoint_every=1,
        keep_checkpoints=num_steps,
        ema_decay=decay,
    )
    train(config)
    # The loop seeds python, numpy and torch with config.seed before it builds the model (a fresh projector).
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    initial = load_model("tiny", cache_dir=model_cache).trainable_state_dict()
    expected = {name: tensor.clone() for name, tensor in initial.items()}
    checkpoints = list_checkpoints(tmp_path / "run")
    assert len(checkpoints) == num_steps
    for checkpoint in checkpoints:
        weights, ema = load_file(checkpoint / TRAINABLE_NAME), load_file(checkpoint / EMA_NAME)
        assert ema.keys() == weights.keys() == expected.keys()
        expected = {n: decay * expected[n] + (1 - decay) * weights[n] for n in expected}
        for name, tensor in expected.items():
            torch.testing.assert_close(ema[name], tensor, rtol=0, atol=1e-6)
        moved = max((weights[n] - ema[n]).abs().max().item() for n in weights)
        assert moved > 0  # the EMA lags the weights
    last = inference_weights(checkpoints[-1])  # a consumer gets the EMA
    assert all(torch.equal(last[n], t) for n, t in load_file(checkpoints[-1] / EMA_NAME).items())

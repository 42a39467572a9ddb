"""The self-improvement loop: its config, the training mix weights, and a 1-round tiny loop end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from factories import make_triple
from train.train_helpers import write_shard_set

from cafe_core import read_triples
from cafe_loop import LoopConfig, load_loop_config, run_loop
from cafe_loop.loop import LOOP_REPORT_NAME, STOP_LOW_ACCEPTANCE, STOP_ROUNDS_DONE, mix_weights
from cafe_train.rank_record import RECORD_RANKS_ENV_VAR, rank_record_path

STEPS_PER_ROUND = 3


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every module here runs its tiny models on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def real_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shard_set(tmp_path_factory.mktemp("real") / "set", range(4))


def tiny_loop(output: Path, real: Path, cache: Path, **overrides) -> LoopConfig:
    """One round at 64 px, 3 steps of 4 samples a round, 2 references x 1 prompt x 2 candidates of 2 sampler steps."""
    options = {
        "rounds": 1,
        "min_acceptance_rate": 0.0,
        "real_to_generated": 1.0,
        "train": {
            "max_steps": STEPS_PER_ROUND,
            "resolution_px": 64,
            "batch_size": 4,
            "num_workers": 0,
            "shuffle_buffer": 4,
            "checkpoint_every": STEPS_PER_ROUND,
            "model_cache_dir": str(cache),
        },
        "improve": {
            "num_references": 2,
            "prompts_per_reference": 1,
            "candidates_per_pair": 2,
            "num_steps": 2,
            "model_cache_dir": str(cache),
        },
        **overrides,
    }
    return LoopConfig(output=output, shards=[real], preset="tiny", **options)


# --- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"rounds": -1}, "rounds=-1"),
        ({"min_acceptance_rate": 1.5}, "min_acceptance_rate=1.5"),
        ({"real_to_generated": 0}, "real_to_generated=0"),
        ({"train": {"batch_size": 0}}, "train: batch_size=0"),
        ({"train": {"shard_weights": [1.0]}}, "train: shard_weights set by the loop"),
        ({"train": {"learning_rate": 1.0}}, "train: unknown training setting(s): learning_rate"),
        ({"improve": {"output": "x"}}, "improve: output set by the loop"),
        ({"improve": {"num_steps": 0}}, "improve: num_steps"),
        ({"scorer_preset": "huge"}, "unknown scorer preset 'huge'"),
        ({"train": [1]}, "train=[1]: must be a mapping"),
    ],
)
def test_bad_settings_are_named(real_set: Path, tmp_path: Path, model_cache: Path, overrides, says: str) -> None:
    with pytest.raises(ValueError) as error:
        tiny_loop(tmp_path / "loop", real_set, model_cache, **overrides)
    assert says in str(error.value)


def test_missing_set_and_fields(real_set: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        LoopConfig(output=tmp_path / "loop", shards=[tmp_path / "none"], preset="tiny")
    with pytest.raises(ValueError, match=r"missing required loop setting\(s\): preset"):
        load_loop_config(output=tmp_path / "loop", shards=[real_set])
    with pytest.raises(ValueError, match=r"unknown loop setting\(s\): round"):
        load_loop_config(output=tmp_path / "loop", shards=[real_set], preset="tiny", round=2)


def test_yaml_and_dotted_sets_merge_into_the_mappings(real_set: Path, tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(
        f"output: {tmp_path / 'loop'}\nshards: [{real_set}]\npreset: tiny\ntrain: {{max_steps: 7, batch_size: 2}}\n"
    )
    config = load_loop_config(path, sets=["train.max_steps=5", "improve.num_steps=3", "rounds=4"])
    assert config.train == {"max_steps": 5, "batch_size": 2} and config.improve == {"num_steps": 3}
    assert config.rounds == 4 and config.scorer_preset == "tiny" and config.steps_per_round == 5
    # Round r trains on to (r + 1) steps_per_round: it starts from round r-1's last checkpoint.
    assert config.round_train_config(2, [real_set], None).max_steps == 15
    improve = config.round_improve_config(tmp_path / "ckpt", [real_set], tmp_path / "loop" / "round-1" / "shards")
    assert improve.num_steps == 3 and improve.preset == "tiny" and improve.shards == (str(real_set),)


def test_mix_weights_split_each_group_by_samples() -> None:
    real = {Path("a"): 30, Path("b"): 10}
    generated = {Path("g1"): 5, Path("g2"): 15}
    weights = mix_weights(real, generated, 3.0)
    assert weights == pytest.approx([0.75 * 30 / 40, 0.75 * 10 / 40, 0.25 * 5 / 20, 0.25 * 15 / 20])
    assert sum(weights[:2]) / sum(weights[2:]) == pytest.approx(3.0)


# --- end to end ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_loop(local_ray, real_set: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    output = tmp_path_factory.mktemp("loop") / "out"
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RECORD_RANKS_ENV_VAR, "1")  # round-1's run records the keys it trained on
        report = run_loop(tiny_loop(output, real_set, model_cache), on_progress=lines.append)
    return output, report, lines


@pytest.mark.slow
@pytest.mark.ray
def test_one_round_layout_and_report(finished_loop, real_set: Path) -> None:
    output, report, _ = finished_loop
    generated = output / "round-1" / "shards"
    for path in (
        "loop-config.json",
        "round-0/train/checkpoints/step-000003/trainable.safetensors",
        "round-0/report/train.json",
        "round-1/shards/shardindex.json",
        "round-1/shards/round-report.json",
        "round-1/report/round-report.json",
        "round-1/report/train.json",
        "round-1/train/checkpoints/step-000006/trainable.safetensors",
    ):
        assert (output / path).exists(), path
    assert list((output / "round-1" / "report").glob("*.png")), "the improve round's pictures are copied"
    saved = json.loads((output / LOOP_REPORT_NAME).read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))
    assert saved["stop_reason"] == STOP_ROUNDS_DONE
    round_0, round_1 = saved["rounds"]
    assert round_0["train_sets"] == [str(real_set)] and round_0["shard_weights"] is None
    assert (round_0["first_step"], round_0["last_step"]) == (0, STEPS_PER_ROUND)
    improve_report = json.loads((generated / "round-report.json").read_text())
    assert round_1["acceptance_rate"] == improve_report["acceptance_rate"]
    assert round_1["num_candidates"] == improve_report["num_candidates"] == 4  # 2 references x 1 prompt x 2
    assert round_1["num_accepted"] == improve_report["num_accepted"] > 0
    assert Path(round_1["improve_checkpoint"]) == Path(round_0["checkpoint"]).resolve()
    assert round_1["train_sets"] == [str(real_set), str(generated)]
    assert round_1["shard_weights"] == pytest.approx([0.5, 0.5])  # real_to_generated 1, one set in each group
    assert round_1["set_samples"][str(generated)] == round_1["num_accepted"]
    assert (round_1["first_step"], round_1["last_step"]) == (STEPS_PER_ROUND, 2 * STEPS_PER_ROUND)
    assert saved["final_checkpoint"] == round_1["checkpoint"]


@pytest.mark.slow
@pytest.mark.ray
def test_generated_set_is_round_1_and_retraining_read_both_sets(finished_loop, real_set: Path) -> None:
    output, report, _ = finished_loop
    generated = output / "round-1" / "shards"
    triples = list(read_triples(generated))
    assert triples and all(t.metadata["round"] == 1 for t in triples)
    assert all(t.metadata["generation"]["checkpoint"] for t in triples)
    # The retraining continued round 0's run: it started at its last step, and read both sets.
    record = json.loads(rank_record_path(output / "round-1" / "train", 0).read_text())
    assert record["first_step"] == STEPS_PER_ROUND and record["last_step"] == 2 * STEPS_PER_ROUND
    real_keys = {make_triple(i).key for i in range(4)}
    generated_keys = {t.key for t in triples}
    assert set(record["keys"]) <= real_keys | generated_keys
    assert set(record["keys"]) & real_keys and set(record["keys"]) & generated_keys
    checkpoint_config = json.loads((Path(report.final_checkpoint) / "config.json").read_text())
    assert checkpoint_config["shards"] == [str(real_set), str(generated)]


@pytest.mark.slow
@pytest.mark.ray
def test_rerun_redoes_nothing(finished_loop, real_set: Path, model_cache: Path) -> None:
    output, report, _ = finished_loop

    def stamps() -> dict[str, int]:
        return {
            str(p.relative_to(output)): p.stat().st_mtime_ns
            for p in output.rglob("*")
            if p.is_file() and p.name not in (LOOP_REPORT_NAME, "loop-config.json")
        }

    before = stamps()
    lines: list[str] = []
    again = run_loop(tiny_loop(output, real_set, model_cache), on_progress=lines.append)
    assert stamps() == before
    assert again.to_dict() | {"wall_s": 0} == report.to_dict() | {"wall_s": 0}
    assert "round 0: training done" in lines[0] and "round 1: improve round done" in lines[1]


@pytest.mark.slow
@pytest.mark.ray
def test_a_floor_above_the_rate_stops_after_round_1(finished_loop, real_set: Path, model_cache: Path, tmp_path) -> None:
    output, report, _ = finished_loop
    assert report.rounds[1].acceptance_rate < 1.0  # the tiny filter keeps about half
    # A loop that got as far as round 1's improve round: round 0 and round 1's set, copied (no training redone).
    stopped = tmp_path / "out"
    shutil.copytree(output / "round-0", stopped / "round-0")
    shutil.copytree(output / "round-1" / "shards", stopped / "round-1" / "shards")
    (stopped / "round-1" / "report").mkdir()
    shutil.copy2(output / "round-1" / "report" / "round-report.json", stopped / "round-1" / "report")
    config = tiny_loop(stopped, real_set, model_cache, rounds=3, min_acceptance_rate=1.0)
    result = run_loop(config)
    assert result.stop_reason == STOP_LOW_ACCEPTANCE
    assert "round 1: acceptance rate" in result.stop_detail and "below min_acceptance_rate 1.000" in result.stop_detail
    assert [r.round for r in result.rounds] == [0, 1] and result.rounds[1].train_run is None
    assert not (stopped / "round-1" / "train").exists() and not (stopped / "round-2").exists()
    assert result.final_checkpoint == str(stopped / "round-0" / "train" / "checkpoints" / "step-000003")
    saved = json.loads((stopped / LOOP_REPORT_NAME).read_text())
    assert saved["stop_reason"] == STOP_LOW_ACCEPTANCE and saved["stop_detail"] == result.stop_detail

"""A self-improvement round on tiny real models: the stages without Ray, then the job on a local Ray with
2 CPUs (round 1 from a real set and a 2-step checkpoint), reruns, refusals and a SIGKILL mid-round."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from improve_helpers import shard_md5s, status_rows, train_tiny, tree_hashes, write_input_set
from PIL import Image

from cafe_core import read_triples
from cafe_core.layout import detect_layout
from cafe_core.lookup import key_locations
from cafe_core.validate import validate_set
from cafe_pipelines.improve_config import apply_overrides, improve_recipe
from cafe_pipelines.improve_round import REPORT_DIR, REPORT_NAME, improve_round, read_round_report
from cafe_pipelines.round_inputs import read_round_inputs
from cafe_pipelines.round_pairs import candidate_key
from cafe_pipelines.round_writer import CANDIDATES_DIR
from cafe_pipelines.stages.generate import GenerateStage
from cafe_pipelines.stages.score import ScoreStage, embeddings_from_bytes

NUM_REFERENCES = 8
REFERENCES_PER_SHARD = 2  # 4 shards
# More steps than the recipe's 4, so that shards commit far enough apart for the kill to land between them.
NUM_STEPS = 8


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every module here runs its tiny models on one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A round-0 set of 8 triples (two classes) and a tiny run trained 2 steps on it, with a private model cache."""
    base = tmp_path_factory.mktemp("improve")
    cache = base / "models"
    shards = write_input_set(base / "real", NUM_REFERENCES)
    run = train_tiny(shards, base / "run", cache)
    return {"base": base, "cache": cache, "shards": shards, "run": run}


def round_config(world: dict[str, Path], output: Path, **overrides):
    return improve_recipe(
        "tiny",
        checkpoint=str(world["run"]),
        shards=[str(world["shards"])],
        output=str(output),
        model_cache_dir=str(world["cache"]),
        references_per_shard=REFERENCES_PER_SHARD,
        num_steps=NUM_STEPS,
        **overrides,
    )


# -- the stages, no Ray ----------------------------------------------------------------------------


def two_pairs(subject: str) -> list[list]:
    """[prompt, seed] of two pairs of a reference of `subject`."""
    return [[f"a {subject} in the snow", 7], [f"a {subject} on the moon", 8]]


def reference_subject(world: dict[str, Path]) -> str:
    return read_round_inputs([str(world["shards"])], num_references=1, seed=0).references[0].subject


def reference_batch(world: dict[str, Path]) -> dict:
    """A reference row with two pairs, a source row (the reference's source and a vanished one), and a
    reference row whose cut-out is gone."""
    reference = read_round_inputs([str(world["shards"])], num_references=1, seed=0).references[0]
    return {
        "input_key": [reference.key, f"source:{reference.key}", "gone"],
        "kind": ["reference", "source", "reference"],
        "status": ["ok"] * 3,
        "reason": [""] * 3,
        "error": [""] * 3,
        "ref_path": [reference.reference.path, "", "/no/such/file.tar"],
        "ref_offset": [reference.reference.offset, 0, 0],
        "ref_size": [reference.reference.size, 0, 10],
        "sources": ["[]", json.dumps([dataclasses.astuple(reference.source_target), ["/no/such.tar", 0, 9]]), "[]"],
        "pairs": [json.dumps(two_pairs(reference.subject)), "[]", json.dumps([["x", 7]])],
        "subject": [reference.subject, "", reference.subject],
    }


def test_generate_and_score_stages_without_ray(world) -> None:
    generate = GenerateStage(
        world["run"],
        num_candidates=2,
        num_steps=2,
        text_guidance=5.0,
        reference_guidance=5.0,
        size_px=64,
        cache_dir=world["cache"],
    )
    batch = generate(reference_batch(world))
    assert batch["status"] == ["ok", "ok", "failed"]
    assert batch["reason"][2] == "error.generate" and "gone" in batch["error"][2]  # one bad row fails alone
    targets = batch["m_targets"][0]
    assert len(targets) == 4 and len(set(targets)) == 4  # 2 pairs x 2 candidates, pair after pair
    assert Image.open(io.BytesIO(targets[0])).size == (64, 64)
    assert batch["m_targets"][1] == [] and batch["t_generate"][0] > 0
    again = generate(reference_batch(world))
    assert again["m_targets"][0] == targets  # same seeds, same bytes
    # A pair's candidates are one batch drawn with its seed, whatever else its row holds.
    [prompt, seed] = two_pairs(reference_subject(world))[0]
    first_pair_alone = generate.generate(batch["m_reference"][0], prompt, seed)
    assert first_pair_alone == targets[:2]

    score = ScoreStage("tiny", cache_dir=world["cache"])
    scored = score(batch)
    values = json.loads(scored["c_scores"][0])
    assert len(values) == 4 and {"dino", "clip_i", "clip_t", "copy_paste", "num_instances", "subject_found"} <= set(
        values[0]
    )
    assert values[0]["clip_t"] != values[2]["clip_t"]  # each candidate against its own pair's prompt
    embeddings = embeddings_from_bytes(scored["c_embeddings"][0], 4)
    assert embeddings.shape[0] == 4 and np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    source = embeddings_from_bytes(scored["c_embeddings"][1], 1)  # the vanished source costs only itself
    assert source.shape == (1, embeddings.shape[1])
    [ok, gone] = json.loads(scored["c_errors"][1])
    assert ok == "" and "the file is gone" in gone and scored["status"][1] == "ok"
    for box, mask in zip(json.loads(scored["c_boxes"][0]), scored["m_masks"][0], strict=True):
        if box is not None:
            image = Image.open(io.BytesIO(mask))
            assert image.mode == "L" and image.size == (64, 64)
    assert scored["status"][2] == "failed"  # passed through untouched
    with pytest.raises(ValueError, match="do not split evenly over 2 prompts"):
        score.score_reference(batch["m_reference"][0], targets[:3], ["a", "b"], "x")


# -- the job on Ray --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def round_one(local_ray, world) -> dict:
    output = world["base"] / "round-1"
    before = tree_hashes(world["shards"])
    report = improve_round(round_config(world, output))
    return {"output": output, "report": report, "before": before}


@pytest.mark.ray
@pytest.mark.slow
def test_round_writes_a_valid_round_1_set(round_one) -> None:
    output, report = round_one["output"], round_one["report"]
    validation = validate_set(output)
    assert validation.ok, validation.problems
    assert report.round == 1 and report.num_references == NUM_REFERENCES
    assert report.num_pairs == NUM_REFERENCES * 2 and report.num_candidates == report.num_pairs * 2
    assert 0 < report.num_accepted < report.num_candidates
    assert report.shards_written == NUM_REFERENCES // REFERENCES_PER_SHARD
    assert report.acceptance_rate == report.num_accepted / report.num_candidates
    assert sum(report.reasons.values()) == report.num_candidates - report.num_accepted
    triples = list(read_triples(output, on_error="raise"))
    assert len(triples) == report.num_accepted == validation.num_samples
    run_step = report.checkpoint_step
    for triple in triples:
        meta = triple.metadata
        assert meta["round"] == 1 and triple.round == 1
        generation = meta["generation"]
        assert generation["checkpoint"]["step"] == run_step == 2
        assert generation["checkpoint"]["path"].endswith("step-000002")
        assert generation["sampler"]["steps"] == NUM_STEPS and generation["sampler"]["scheduler"] == "DDIMScheduler"
        assert generation["sampler"]["text_guidance"] == 7.5 and isinstance(generation["seed"], int)
        assert set(meta["quality"]) >= {"dino", "clip_i", "clip_t", "copy_paste", "num_instances", "subject_found"}
        assert meta["source"]["set"] == str(Path(round_one["report"].input_sets[0]))
        assert triple.key == candidate_key(
            meta["source"]["key"], generation["prompt_index"], generation["index"], run_step, 1
        )
        assert meta["subject"] in triple.prompt
        assert triple.target.size == triple.mask.size == (64, 64) and triple.mask.mode == "L"
        assert "generator" in meta["models"] and "dino" in meta["models"]
    # the reference member is the input's cut-out, byte for byte
    inputs = {t.key: t for t in read_triples(round_one["report"].input_sets[0])}
    for triple in triples[:3]:
        source = inputs[triple.metadata["source"]["key"]]
        assert triple.reference.tobytes() == source.reference.tobytes()


@pytest.mark.ray
@pytest.mark.slow
def test_every_candidate_has_a_status_row_and_a_table_row(round_one) -> None:
    output, report = round_one["output"], round_one["report"]
    rows = status_rows(output)
    assert len(rows) == report.num_candidates
    assert set(rows) == {c["key"] for c in report.candidates}
    for candidate in report.candidates:
        row = rows[candidate["key"]]
        if candidate["accepted"]:
            assert (row["status"], row["reason"], row["sample_keys"]) == ("ok", "", [candidate["key"]])
        else:
            assert row["status"] in ("skipped", "failed") and row["reason"] == candidate["reason"]
            assert row["reason"].split(".")[0] in ("filter", "dedupe", "error") and not row["sample_keys"]
    assert len(list((output / CANDIDATES_DIR).glob("*.parquet"))) == report.shards_written


@pytest.mark.ray
@pytest.mark.slow
def test_round_report_lineage_and_pictures(round_one) -> None:
    output, report = round_one["output"], round_one["report"]
    saved = read_round_report(output)
    assert saved.num_accepted == report.num_accepted and saved.candidates == report.candidates
    assert json.loads((output / REPORT_NAME).read_text())["acceptance_rate"] == pytest.approx(report.acceptance_rate)
    lists = report.score_lists()
    assert len(lists["dino"]["accepted"]) == report.num_accepted
    assert set(report.stage_s) == {"read", "generate", "score", "filter", "dedupe", "write", "report"}
    assert report.stage_s["generate"] > 0 and report.stage_s["score"] > 0
    dataset = json.loads((output / "dataset.json").read_text())
    assert dataset["rounds"] == {"1": report.num_accepted}
    lineage = dataset["lineage"]
    assert lineage["job"] == "improve-round" and lineage["round"] == 1
    assert [s["path"] for s in lineage["input_sets"]] == report.input_sets
    assert lineage["checkpoints"] == [
        {"path": report.checkpoint, "step": 2, "preset": "tiny", "weights": "trainable.safetensors"}
    ]
    for name in ("dino", "clip_i", "copy_paste"):
        assert Image.open(output / REPORT_DIR / f"histogram-{name}.png").size[0] > 100
    grid = Image.open(output / REPORT_DIR / "examples.png")
    assert grid.size[0] > 200 and grid.size[1] > 200


@pytest.mark.ray
@pytest.mark.slow
def test_the_input_set_is_unchanged(round_one, world) -> None:
    assert tree_hashes(world["shards"]) == round_one["before"]


@pytest.mark.ray
@pytest.mark.slow
def test_rerun_of_a_finished_round_writes_nothing(round_one, world) -> None:
    output = round_one["output"]
    md5s, rows = shard_md5s(output), status_rows(output)
    rerun = improve_round(round_config(world, output))
    assert rerun.shards_written == 0 and rerun.candidates_this_run == 0
    assert rerun.references_already_done == NUM_REFERENCES
    assert rerun.num_accepted == round_one["report"].num_accepted
    assert rerun.candidates == round_one["report"].candidates
    assert shard_md5s(output) == md5s and status_rows(output).keys() == rows.keys()
    assert validate_set(output).ok


@pytest.mark.ray
@pytest.mark.slow
def test_round_2_from_the_real_set_and_round_1(round_one, world) -> None:
    output = world["base"] / "round-2"
    inputs = [str(world["shards"]), str(round_one["output"])]
    before = tree_hashes(round_one["output"])
    report = improve_round(apply_overrides(round_config(world, output, num_references=3), {"shards": inputs}))
    assert report.round == 2 and report.num_references == 3
    assert validate_set(output).ok
    triples = list(read_triples(output, on_error="raise"))
    assert triples and all(t.round == 2 for t in triples)
    round_1_keys = set(key_locations(detect_layout(round_one["output"])))
    assert not round_1_keys & {t.key for t in triples}
    lineage = json.loads((output / "dataset.json").read_text())["lineage"]
    assert [s["rounds"] for s in lineage["input_sets"]] == [
        {"0": NUM_REFERENCES},
        {"1": round_one["report"].num_accepted},
    ]
    assert tree_hashes(round_one["output"]) == before


@pytest.mark.ray
def test_a_round_refuses_to_write_into_its_input(local_ray, world) -> None:
    before = tree_hashes(world["shards"])
    config = round_config(world, world["base"] / "elsewhere")
    for output in (world["shards"], world["shards"] / "round-1"):
        with pytest.raises(ValueError, match=r"input set|inside"):
            apply_overrides(config, {"output": str(output)})
    assert tree_hashes(world["shards"]) == before


@pytest.mark.ray
@pytest.mark.slow
def test_killed_round_rerun_ends_with_the_shards_of_an_uninterrupted_run(round_one, world) -> None:
    killed = world["base"] / "killed"
    command = [
        str(Path(sys.executable).parent / "cafe"),
        "improve",
        "round",
        "--checkpoint",
        str(world["run"]),
        "--shards",
        str(world["shards"]),
        "--output",
        str(killed),
        "--preset",
        "tiny",
        "--set",
        f"model_cache_dir={world['cache']}",
        "--set",
        f"references_per_shard={REFERENCES_PER_SHARD}",
        "--set",
        f"num_steps={NUM_STEPS}",
    ]
    env = dict(os.environ)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    process = subprocess.Popen(command, env=env, start_new_session=True, **quiet)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(killed.glob("*.stats.json")):
        assert process.poll() is None, "the round ended before it could be killed"
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and everything it started, mid-round
    process.wait()
    done_at_kill = len(list(killed.glob("*.stats.json")))
    assert 1 <= done_at_kill < NUM_REFERENCES // REFERENCES_PER_SHARD, "kill the round between its first and last shard"

    rerun = improve_round(round_config(world, killed))
    assert rerun.references_already_done == done_at_kill * REFERENCES_PER_SHARD
    reference = round_one["output"]
    layout = detect_layout(killed)
    assert not layout.temp_files()
    assert set(layout.existing_numbers()) == set(layout.done_numbers())
    assert sorted(key_locations(layout)) == sorted(key_locations(detect_layout(reference)))
    assert status_rows(killed).keys() == status_rows(reference).keys()
    assert shard_md5s(killed) == shard_md5s(reference)  # the same shards, byte for byte
    assert [(c["key"], c["accepted"], c["reason"]) for c in rerun.candidates] == [
        (c["key"], c["accepted"], c["reason"]) for c in round_one["report"].candidates
    ]
    assert validate_set(killed).ok

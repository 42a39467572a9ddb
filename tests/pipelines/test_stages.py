"""Each stage as a plain callable on tiny real models, chained by hand without Ray."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from inputs import write_photos

from cafe_core import EncodedSample
from cafe_core.triple import decode_triple
from cafe_pipelines.batch import run_stage, set_rows
from cafe_pipelines.build_config import build_recipe
from cafe_pipelines.sources import folder_inputs
from cafe_pipelines.stages.caption import CaptionStage
from cafe_pipelines.stages.compose import MEMBER_COLUMNS, ComposeStage
from cafe_pipelines.stages.decode import DecodeStage
from cafe_pipelines.stages.ground import GroundStage
from cafe_pipelines.stages.segment import SegmentStage
from cafe_vision.presets import get_preset


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, ("astronaut", "coffee", "rocket"))
    refs = list(folder_inputs(folder))
    config = build_recipe("tiny", input=str(folder), output="unused")
    batch = {f.name: [getattr(r, f.name) for r in refs] for f in dataclasses.fields(refs[0])}
    batch["caption"] = ["", "a cup of coffee on a table", ""]  # one caption comes with its input
    batch = DecodeStage(config.gates, max_side_px=config.max_side_px)(batch)
    batch = CaptionStage("tiny")(batch)
    batch = GroundStage("tiny", box_threshold=0.0, text_threshold=0.0, require_subject_phrase=False)(batch)
    batch = SegmentStage("tiny")(batch)
    batch = ComposeStage(config.gates, get_preset("tiny").model_records())(batch)
    return batch


def test_every_stage_fills_its_columns(composed: dict) -> None:
    assert composed["caption"][1] == "a cup of coffee on a table"  # given captions are kept
    assert all(isinstance(c, str) and c for c in composed["caption"])
    for i in range(3):
        assert composed["t_decode"][i] > 0
        if composed["status"][i] == "ok":
            x0, y0, x1, y1 = composed["box_xyxy"][i]
            assert 0 <= x0 < x1 and 0 <= y0 < y1
            assert 0.0 <= composed["mask_iou"][i] <= 1.0
            assert composed["image"][i].size == 0  # only encoded bytes travel on to the writer


def test_composed_rows_are_valid_triples(composed: dict) -> None:
    ok = [i for i, s in enumerate(composed["status"]) if s == "ok"]
    assert ok, f"no triple from 3 photos: {list(zip(composed['reason'], composed['error'], strict=True))}"
    for i in ok:
        members = {suffix: composed[name][i] for suffix, name in MEMBER_COLUMNS.items()}
        triple = decode_triple(composed["key"][i], members)  # raises on any contract breach
        assert triple.metadata["source"]["input_key"] == composed["input_key"][i]
        assert triple.metadata["subject"] in triple.prompt.lower()
        assert set(triple.metadata["models"]) == {"captioner", "grounder", "segmenter"}
        assert EncodedSample.from_members(triple.key, members).metadata == json.loads(members["json"])


def test_a_row_that_breaks_the_batch_fails_alone() -> None:
    batch = {"input_key": ["a", "b", "c"], "status": ["ok", "ok", "skipped"], "reason": ["", "", "gate.x"]}

    def work(b: dict, indices: list[int]) -> None:
        if 1 in indices:
            raise RuntimeError("model blew up on b")
        set_rows(b, "out", indices, ["done"] * len(indices), "")

    result = run_stage("caption", batch, work)
    assert result["status"] == ["ok", "failed", "skipped"]
    assert result["reason"] == ["", "error.caption", "gate.x"]
    assert result["error"][1] == "RuntimeError: model blew up on b"
    assert result["out"][0] == "done"


def test_caption_naming_nothing_is_refused(tmp_path: Path) -> None:
    batch = {
        "input_key": ["x"],
        "status": ["ok"],
        "reason": [""],
        "error": [""],
        "caption": ["on the of in"],
        "image": [np.zeros((64, 64, 3), np.uint8)],
    }
    out = GroundStage("tiny", box_threshold=0.0, text_threshold=0.0)(batch)
    assert (out["status"][0], out["reason"][0]) == ("skipped", "subject.no_noun_phrase")

"""Triple: the data contract checked on construction, and the encode/decode round trip."""

from __future__ import annotations

import copy
import dataclasses
import json

import core_shards
import factories
import numpy as np
import pytest
from PIL import Image

from cafe_core import SCHEMA_VERSION, Triple, TripleError, check_key, make_key, metadata_problems
from cafe_core.triple import MEMBERS, decode_triple, encode_metadata


@pytest.fixture
def good() -> Triple:
    return factories.make_triple(0)


def parts(triple: Triple, **changes) -> dict:
    """The constructor arguments of `triple`, with `changes` applied (metadata deep-copied)."""
    fields = {f.name: getattr(triple, f.name) for f in dataclasses.fields(Triple)}
    fields["metadata"] = copy.deepcopy(fields["metadata"])
    fields.update(changes)
    return fields


def broken(triple: Triple, **changes) -> TripleError:
    with pytest.raises(TripleError) as info:
        Triple(**parts(triple, **changes))
    return info.value


def test_factory_triple_is_valid(good):
    assert good.round == 0
    assert set(good.encode()) == set(MEMBERS)


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "0123456789ABCDEF",  # uppercase
        "0123456789abcde",  # 15 characters
        "0123456789abcdef0",  # 17 characters
        "0123456789abcd.f",  # a dot: webdataset would split the key there
        "_123456789abcdef",  # leading underscore: webdataset reserves it
        "0123456789abcdeg",  # not hex
        "",
        1234567890123456,
        None,
    ],
)
def test_key_rule_is_enforced(good, key):
    error = broken(good, key=key)
    assert "key:" in str(error)
    assert repr(key) in str(error)
    with pytest.raises(ValueError, match="16 lowercase hex"):
        check_key(key)


def test_make_key_is_deterministic_and_follows_the_rule():
    key = make_key("inputs/a.jpg", 3)
    assert key == make_key("inputs/a.jpg", 3)
    assert check_key(key) == key
    assert len({make_key("inputs/a.jpg", i) for i in range(50)}) == 50
    assert make_key("inputs/a.jpg") != make_key("inputs/b.jpg")
    with pytest.raises(ValueError, match="source_id"):
        make_key("")
    with pytest.raises(ValueError, match="subject_index"):
        make_key("inputs/a.jpg", -1)


# -- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "mode"),
    [("target", "RGBA"), ("target", "L"), ("reference", "RGB"), ("reference", "LA"), ("mask", "RGB"), ("mask", "1")],
)
def test_image_modes_are_enforced(good, field, mode):
    error = broken(good, **{field: getattr(good, field).convert(mode)})
    assert f"{field}: mode {mode}" in str(error)


@pytest.mark.parametrize("field", ["target", "reference", "mask"])
def test_images_must_be_pil_images(good, field):
    error = broken(good, **{field: np.asarray(getattr(good, field))})
    assert f"{field}: expected a PIL image" in str(error)


def test_mask_size_must_equal_target_size(good):
    error = broken(good, mask=good.mask.resize((good.target.width + 1, good.target.height)))
    assert "mask: size" in str(error)
    assert str(good.target.size) in str(error)


def test_reference_may_have_its_own_size(good):
    # The reference is cropped to the box: its size is not tied to the target's.
    Triple(**parts(good, reference=good.reference.resize((7, 5))))


# -- prompt -------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   \n\t", None, b"a photo of red cube"])
def test_prompt_must_be_non_empty_text(good, prompt):
    assert "prompt:" in str(broken(good, prompt=prompt))


def test_prompt_must_be_utf8_encodable(good):
    error = broken(good, prompt="a photo of red cube \ud800")
    assert "prompt:" in str(error)
    assert "UTF-8" in str(error)


# -- metadata -----------------------------------------------------------------------------------


def _without(meta: dict, field: str) -> dict:
    meta = copy.deepcopy(meta)
    del meta[field]
    return meta


def _with(meta: dict, **changes) -> dict:
    meta = copy.deepcopy(meta)
    meta.update(changes)
    return meta


META = factories.make_metadata("inputs/img-00000.jpg", [16, 12, 48, 36])


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        (_without(META, "schema_version"), "metadata.schema_version: missing"),
        (_without(META, "source"), "metadata.source: missing"),
        (_with(META, schema_version=SCHEMA_VERSION + 1), "metadata.schema_version"),
        (_with(META, schema_version=str(SCHEMA_VERSION)), "metadata.schema_version"),
        (_with(META, box_xyxy=[16, 12, 65, 36]), "metadata.box_xyxy"),  # past the 64 px width
        (_with(META, box_xyxy=[-1, 12, 48, 36]), "metadata.box_xyxy"),
        (_with(META, box_xyxy=[48, 12, 16, 36]), "metadata.box_xyxy"),  # x0 > x1
        (_with(META, box_xyxy=[16, 12, 48]), "metadata.box_xyxy"),
        (_with(META, round=1), "metadata.generation"),
        (_with(META, round=-1), "metadata.round"),
        (_with(META, round=True), "metadata.round"),
        (_with(META, scores={"box": float("nan"), "mask_iou": 0.9}), "metadata.scores.box"),
        (_with(META, scores={"box": float("inf")}), "metadata.scores.box"),
        (_with(META, quality={"clip_t": "high"}), "metadata.quality.clip_t"),
        (_with(META, subject=" "), "metadata.subject"),
        (_with(META, gates="box_score"), "metadata.gates"),
        (_with(META, source={"uri": "file:///x", "sha256": "0" * 64}), "metadata.source.input_key"),
        (_with(META, models={"grounder": {"name": "x"}}), "metadata.models.grounder"),
        (_with(META, round=2, generation={"checkpoint": "c", "seed": 1.5, "sampler": {}}), "metadata.generation.seed"),
        ([], "metadata"),
    ],
)
def test_metadata_schema_is_enforced(good, metadata, named):
    error = broken(good, metadata=metadata)
    assert named in str(error)


def test_generated_sample_with_generation_is_valid():
    triple = factories.make_triple(3, round_=2)
    assert triple.round == 2
    assert triple.metadata["generation"]["seed"] == 0


def test_every_problem_is_named_at_once(good):
    error = broken(
        good,
        key="BAD",
        mask=good.mask.convert("RGB"),
        prompt="",
        metadata=_with(good.metadata, schema_version=99),
    )
    message = str(error)
    for field in ("key:", "mask: mode RGB", "prompt:", "metadata.schema_version"):
        assert field in message
    assert isinstance(error, ValueError)  # callers catching ValueError still catch it


def test_metadata_problems_is_empty_for_valid_metadata():
    assert metadata_problems(META, (64, 48)) == []
    assert metadata_problems(META) == []


# -- encode and decode --------------------------------------------------------------------------


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


@pytest.mark.parametrize(
    "triple",
    [
        factories.make_triple(5),
        factories.make_triple(6, size=(41, 37), round_=1),
        dataclasses.replace(factories.make_triple(7), prompt="ein Würfel 🧊 «rouge» — 赤い立方体"),
    ],
    ids=["plain", "odd-size-round-1", "unicode-prompt"],
)
def test_encode_decode_round_trip(triple):
    members = triple.encode()
    assert list(members) == list(MEMBERS)
    assert all(isinstance(v, bytes) for v in members.values())
    back = decode_triple(triple.key, members)

    assert back.key == triple.key
    assert back.prompt == triple.prompt
    assert back.metadata == json.loads(json.dumps(triple.metadata))
    assert back.metadata == triple.metadata
    # PNG members are lossless: every pixel, alpha included, comes back.
    assert back.reference.mode == "RGBA"
    assert back.mask.mode == "L"
    assert np.array_equal(_pixels(back.reference), _pixels(triple.reference))
    assert np.array_equal(_pixels(back.mask), _pixels(triple.mask))
    # The target is JPEG (lossy; the noise background is its worst case): same size and mode,
    # and the flat subject square comes back close to its colour.
    assert back.target.mode == "RGB"
    assert back.target.size == triple.target.size
    x0, y0, x1, y1 = triple.metadata["box_xyxy"]
    inner = (slice(y0 + 4, y1 - 4), slice(x0 + 4, x1 - 4))
    diff = np.abs(_pixels(back.target)[inner].astype(int) - _pixels(triple.target)[inner].astype(int))
    assert diff.mean() < 8


def test_encode_is_deterministic():
    a = factories.make_triple(9).encode()
    b = factories.make_triple(9).encode()
    assert a == b
    # Metadata bytes do not depend on dict order.
    meta = factories.make_metadata("inputs/x.jpg", [1, 2, 3, 4])
    assert encode_metadata(meta) == encode_metadata(dict(reversed(list(meta.items()))))


def test_reference_alpha_survives_the_round_trip(good):
    reference = good.reference.copy()
    alpha = Image.new("L", reference.size, 0)
    alpha.paste(255, (2, 2, reference.width - 2, reference.height - 2))
    reference.putalpha(alpha)
    triple = Triple(**parts(good, reference=reference))
    back = decode_triple(triple.key, triple.encode())
    assert np.array_equal(_pixels(back.reference)[..., 3], _pixels(alpha))


def test_decode_names_missing_members(good):
    members = good.encode()
    del members["mask.png"]
    del members["json"]
    with pytest.raises(TripleError, match=r"missing member\(s\) mask\.png, json"):
        decode_triple(good.key, members)


def test_decode_checks_the_contract(good):
    members = good.encode()
    members["json"] = encode_metadata(_with(good.metadata, round=1))
    with pytest.raises(TripleError, match=r"metadata\.generation"):
        decode_triple(good.key, members)
    members = good.encode()
    with pytest.raises(TripleError, match="key:"):
        decode_triple(good.key.upper(), members)


def test_decode_raises_on_undecodable_members(good):
    members = good.encode()
    members["json"] = b"{not json"
    with pytest.raises(ValueError):
        decode_triple(good.key, members)
    members = good.encode()
    members["mask.png"] = members["mask.png"][:40]
    with pytest.raises(OSError):
        decode_triple(good.key, members)


def test_factory_helpers_give_distinct_keys_per_subject():
    keys = {core_shards.triple(1, s).key for s in range(3)}
    assert len(keys) == 3

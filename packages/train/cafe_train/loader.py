"""Shards -> training batches, on webdataset: resampled, split by node and worker, shuffled, augmented.

    loader = build_loader(config, tokenizer=model.tokenizer,
                          reference_processor=model.reference_encoder.image_processor, num_samples=n)
    for batch in loader: ...            # one epoch of `loader.dataset.batches_per_worker` batches per worker

A batch is a dict:

    keys               list[str]                          sample keys
    reference_pixels   (B, 3, h, w) float32               augmented cut-out, through the reference encoder's processor
    target_pixels      (B, 3, R, R) float32 in [-1, 1]    target resized (shorter side R) and center-cropped
    prompt_ids         (B, L) int64                       tokenized prompt ("" when dropped)
    mask               (B, 1, R/8, R/8) float32 in [0, 1] subject mask at latent resolution, same crop
    drop_reference     (B,) bool                          True: the loop swaps in `null_features` (reference dropout)
    num_skipped        int                                unreadable samples passed over making this batch (see below)
    num_flagged        int                                flagged or excluded samples passed over making this batch

Skipped and flagged samples: a sample that does not decode (or lacks a member), or a shard that breaks
mid-read, is passed over with a warning on the `cafe_train.loader` logger naming the shard and the sample
key (once per shard and key in an epoch of a worker, as the endless stream draws shards again); samples
in a set's flags file or `config.excluded_keys` are passed over silently. Each batch carries how many of
each were passed over since the previous batch of its worker, so the counts cross DataLoader worker
processes with the batches and the loop can sum them (over ranks too) into its metrics. They count
reads, not distinct samples: a shard drawn twice counts its bad sample twice.

Why a `wds.DataPipeline` and not `wds.WebDataset(resampled=True)`: WebDataset's resampled shard list seeds
itself from the pid and the clock, and every rank draws its own stream, so ranks overlap and nothing replays.
Here one resampled shard stream is drawn from (seed, epoch), the same on every rank and worker, and
`wds.split_by_node` and a per-worker split (see `ShardBatches.__iter__`) deal its positions out: ranks
and workers read disjoint draws, and a run with the same seed reads the same samples in the same order
with the same augmentations.

Data position: `ShardBatches.set_position(epoch, batches_done)` makes the next iteration start that many
batches into that epoch. Skipped samples are read from the tars but not decoded, and augmentation draws
come from a per-sample generator seeded by the sample's position, so a resumed run sees exactly the batches
an uninterrupted one would (given the same num_workers and world size; a resume with other values reads a
different, equally valid stream).

Training mix (`config.shard_weights`, one weight per shard set): the shard stream draws shard j of set s
with probability proportional to w_s / N_s (N_s = the set's samples, from its shardindex.json), so set s
supplies a w_s / sum(w) share of the samples and a set's samples stay equally likely whatever its shard
sizes. The draw is still one stream from (seed, epoch), dealt out as above, so the mix keeps every
guarantee of this doc. Without weights every shard is equally likely (the stream drawn before weights
existed, unchanged).
"""

from __future__ import annotations

import io
import itertools
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset

from cafe_core import flagged_keys, resolve_shards
from cafe_core.index import read_index
from cafe_core.layout import INDEX_NAME, detect_layout
from cafe_train.config import TrainConfig

SD_LATENT_FACTOR = 8  # pixels per latent cell of Stable Diffusion's VAE (the toy preset's has 2)
MEMBERS = ("target.jpg", "reference.png", "mask.png", "prompt.txt")
DECODE_ERRORS = (OSError, ValueError, UnicodeDecodeError, Image.DecompressionBombError)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Augmentation:
    """Reference augmentation at training time, so the model cannot copy-paste the cut-out."""

    flip_p: float = 0.5
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_rotation_deg: float = 10.0
    enabled: bool = True


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def _rank_info() -> tuple[int, int, int, int]:
    """(rank, world_size, worker, num_workers), as webdataset computes them."""
    return wds.utils.pytorch_worker_info()


class EpochResampledShards(IterableDataset):
    """An endless stream of `{"url": shard}` drawn with replacement from (seed, epoch): identical everywhere.

    `weights` (one per url, >= 0, not all 0): each draw picks url i with probability weights[i] / sum;
    None: uniformly (the same stream as before weights existed)."""

    def __init__(self, urls: Sequence[str], seed: int, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.urls = list(urls)
        self.seed = seed
        self.epoch = 0
        self.cum_weights = None
        if weights is not None:
            if len(weights) != len(self.urls) or any(w < 0 for w in weights) or not sum(weights) > 0:
                raise ValueError(f"weights: need one weight >= 0 per url ({len(self.urls)}), not all 0; got {weights}")
            self.cum_weights = list(itertools.accumulate(float(w) for w in weights))

    def __iter__(self) -> Iterator[dict[str, str]]:
        rng = random.Random(_seed(self.seed, self.epoch, 0x5A4D))
        if self.cum_weights is None:
            while True:
                yield {"url": rng.choice(self.urls)}
        while True:
            yield {"url": rng.choices(self.urls, cum_weights=self.cum_weights)[0]}


def shard_draw_weights(sets: Sequence[str | Path], set_weights: Sequence[float]) -> tuple[list[Path], list[float]]:
    """The shards of `sets` (in order, as `resolve_shards` lists them) and each one's draw weight.

    Shard j of set s weighs set_weights[s] / N_s, N_s the set's sample count from its shardindex.json
    (so the set's share of the samples is its weight's share; see the module doc). A set without an index
    counts one sample per shard: its shards are equally likely and its share is still its weight's share
    when they hold equally many samples."""
    urls: list[Path] = []
    weights: list[float] = []
    for root, set_weight in zip(sets, set_weights, strict=True):
        shards = resolve_shards(root)
        sizes = _indexed_sizes(Path(root))
        num_samples = sum(sizes.get(shard.name, 1) for shard in shards)
        urls += shards
        weights += [set_weight / max(1, num_samples)] * len(shards)
    return urls, weights


def _indexed_sizes(root: Path) -> dict[str, int]:
    """Shard file name -> nsamples, from the set's index (empty for a folder without one)."""
    if not (root.is_dir() and (root / INDEX_NAME).is_file()):
        return {}
    index = read_index(detect_layout(root))
    return {Path(entry["url"]).name: int(entry.get("nsamples", 1)) for entry in index["shardlist"]}


MAX_DROPPED_IN_A_ROW = 100_000


class PassedOver:
    """What one worker's stream passed over: counts since the last batch, and a warning per bad sample.

    Lives inside one `ShardBatches.__iter__` (one DataLoader worker, one epoch), so it needs no locks and
    its counts reach the loop in the batches (see the module doc)."""

    def __init__(self) -> None:
        self.num_skipped = 0
        self.num_flagged = 0
        self._warned: set[tuple[str, str]] = set()

    def skipped(self, url: str, key: str, reason: str) -> None:
        self.num_skipped += 1
        if (url, key) not in self._warned:  # the stream draws the shard again and again: say it once
            self._warned.add((url, key))
            log.warning("skipped sample %s in shard %s: %s", key, url, reason)

    def take(self) -> tuple[int, int]:
        """(skipped, flagged) since the last call, and start counting again."""
        counts = (self.num_skipped, self.num_flagged)
        self.num_skipped = self.num_flagged = 0
        return counts

    def tar_handler(self, exn: Exception) -> bool:
        """webdataset's handler for a shard that fails to read: warn naming the shard, count it, go on.

        webdataset appends the url (and the stream) to the exception's args; the key of a sample is not
        known when the tar itself breaks, so the warning says where it broke instead."""
        url = next((a for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "?")
        reason = str(exn.args[0]) if exn.args else repr(exn)
        self.skipped(url, "(the rest of the shard)", f"the tar does not read on: {type(exn).__name__}: {reason}")
        return True


def _drop_keys(excluded: frozenset[str], passed: PassedOver) -> Callable[[Iterator[dict]], Iterator[dict]]:
    def stage(samples: Iterator[dict]) -> Iterator[dict]:
        dropped = 0
        for sample in samples:
            missing = [m for m in MEMBERS if m not in sample]
            if sample["__key__"] not in excluded and not missing:
                dropped = 0
                yield sample
                continue
            if sample["__key__"] in excluded:
                passed.num_flagged += 1
            else:
                passed.skipped(sample.get("__url__", "?"), sample["__key__"], f"missing member(s) {', '.join(missing)}")
            dropped += 1
            if dropped >= MAX_DROPPED_IN_A_ROW:  # the stream is endless: never spin on a fully excluded set
                raise RuntimeError(
                    f"{dropped} samples in a row were flagged, excluded or incomplete; nothing left to train on"
                )

    return stage


def _member_image(sample: dict, member: str) -> Image.Image:
    """The decoded image `member` of `sample`; ValueError naming the member when it does not decode."""
    try:
        image = Image.open(io.BytesIO(sample[member]))
        image.load()  # decode now, so a broken image fails here, named, not in a later convert
    except DECODE_ERRORS as exc:
        # PIL's message for bytes that are no image names only an in-memory buffer object.
        reason = "not an image PIL can identify" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"{member} does not decode ({type(exc).__name__}: {reason})") from exc
    return image


def _take_every(start: int, step: int) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """Positions start, start + step, ... of the stream: `wds.split_by_worker` for a chosen worker index."""

    def stage(items: Iterator[dict]) -> Iterator[dict]:
        yield from itertools.islice(items, start, None, step)

    return stage


def _center_square(image: Image.Image, size_px: int, resample: Image.Resampling) -> Image.Image:
    """Resize so the shorter side is `size_px`, then crop the center square."""
    return ImageOps.fit(image, (size_px, size_px), method=resample, centering=(0.5, 0.5))


def augment_reference(reference: Image.Image, rng: np.random.Generator, augmentation: Augmentation) -> Image.Image:
    """An RGB reference: the RGBA cut-out flipped, scaled and rotated at random, laid on a random background.

    The background goes in through the alpha (the mask), so the subject never keeps its old scene.
    """
    rgba = reference.convert("RGBA")
    if augmentation.enabled:
        if rng.random() < augmentation.flip_p:
            rgba = ImageOps.mirror(rgba)
        scale = rng.uniform(*augmentation.scale_range)
        width, height = rgba.size
        rgba = rgba.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR)
        angle = rng.uniform(-augmentation.max_rotation_deg, augmentation.max_rotation_deg)
        rgba = rgba.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)  # corners stay transparent
        if rng.random() < 0.5:
            background = Image.new("RGBA", rgba.size, (*(int(c) for c in rng.integers(0, 256, 3)), 255))
        else:
            noise = rng.integers(0, 256, (rgba.size[1], rgba.size[0], 3), dtype=np.uint8)
            background = Image.fromarray(noise, "RGB").convert("RGBA")
    else:
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


class ShardBatches(IterableDataset):
    """One epoch of batches per iteration (`batches_per_worker` from each DataLoader worker); see the module doc."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        tokenizer: Any,
        reference_processor: Any,
        resolution_px: int,
        batch_size: int,
        batches_per_worker: int,
        seed: int,
        shuffle_buffer: int = 1000,
        prompt_dropout: float = 0.0,
        reference_dropout: float = 0.0,
        excluded_keys: frozenset[str] = frozenset(),
        augmentation: Augmentation = Augmentation(),
        shard_weights: Sequence[float] | None = None,
        latent_factor: int = SD_LATENT_FACTOR,
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("no shards to read")
        self.urls = [str(u) for u in urls]
        self.shard_weights = list(shard_weights) if shard_weights is not None else None  # one per url
        self.tokenizer = tokenizer
        self.reference_processor = reference_processor
        self.resolution_px = resolution_px
        self.latent_factor = latent_factor  # the mask is pooled to the latent grid
        self.batch_size = batch_size
        self.batches_per_worker = batches_per_worker
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.prompt_dropout = prompt_dropout
        self.reference_dropout = reference_dropout
        self.excluded_keys = frozenset(excluded_keys)
        self.augmentation = augmentation
        self.epoch = 0
        self.batches_done = 0  # in `epoch`, over all workers of this rank

    def set_position(self, epoch: int, batches_done: int = 0) -> None:
        """Start the next iteration `batches_done` batches into `epoch` (call before iterating the loader)."""
        self.epoch = epoch
        self.batches_done = batches_done

    def _shuffle(self, samples: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        buffer: list[dict] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= self.shuffle_buffer:
                index = rng.randrange(len(buffer))
                buffer[index], buffer[-1] = buffer[-1], buffer[index]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def _decode(self, sample: dict, rng: np.random.Generator) -> dict[str, Any]:
        size = self.resolution_px
        target = _member_image(sample, "target.jpg").convert("RGB")
        mask = _member_image(sample, "mask.png").convert("L")
        reference = _member_image(sample, "reference.png")
        prompt = sample["prompt.txt"].decode("utf-8")
        target = _center_square(target, size, Image.Resampling.BICUBIC)
        mask = _center_square(mask, size, Image.Resampling.BILINEAR)
        mask = mask.resize((size // self.latent_factor,) * 2, Image.Resampling.BOX)
        target_pixels = torch.from_numpy(np.asarray(target, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        mask_tensor = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None]
        return {
            "key": sample["__key__"],
            "reference": augment_reference(reference, rng, self.augmentation),
            "target_pixels": target_pixels,
            "mask": mask_tensor,
            "prompt": "" if rng.random() < self.prompt_dropout else prompt,
            "drop_reference": bool(rng.random() < self.reference_dropout),
        }

    def _collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        reference_pixels = self.reference_processor(
            images=[item["reference"] for item in items], return_tensors="pt"
        ).pixel_values
        prompt_ids = self.tokenizer(
            [item["prompt"] for item in items],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return {
            "keys": [item["key"] for item in items],
            "reference_pixels": reference_pixels.float(),
            "target_pixels": torch.stack([item["target_pixels"] for item in items]),
            "prompt_ids": prompt_ids,
            "mask": torch.stack([item["mask"] for item in items]),
            "drop_reference": torch.tensor([item["drop_reference"] for item in items], dtype=torch.bool),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, _world_size, worker, num_workers = _rank_info()
        # DataLoader takes batches round-robin from its workers, starting with worker 0: in an epoch,
        # batch i comes from stream i % W. A loader resumed `batches_done` batches in starts with its
        # worker 0 too, so its worker w plays stream (w + batches_done) % W and skips what that stream
        # made before (its batches below `batches_done`). This is why the worker split is done here
        # rather than by `wds.split_by_worker`, which always gives worker w stream w.
        stream = (worker + self.batches_done) % num_workers
        skip_batches = max(0, math.ceil((self.batches_done - stream) / num_workers))
        stream_seed = _seed(self.seed, self.epoch, rank, stream)
        shards = EpochResampledShards(self.urls, self.seed, self.shard_weights)
        shards.epoch = self.epoch
        passed = PassedOver()
        pipeline = wds.DataPipeline(
            shards,
            wds.split_by_node,
            _take_every(stream, num_workers),
            wds.tarfile_to_samples(handler=passed.tar_handler),
            _drop_keys(self.excluded_keys, passed),
        )
        samples = self._shuffle(iter(pipeline), random.Random(stream_seed))
        position = 0
        for _ in range(skip_batches * self.batch_size):  # read, not decoded
            next(samples)
            position += 1
        passed.take()  # what the skipped batches passed over was counted by the run that trained on them
        for _ in range(skip_batches, self.batches_per_worker):
            items = []
            while len(items) < self.batch_size:
                sample = next(samples)
                rng = np.random.default_rng(_seed(stream_seed, position))
                position += 1
                try:
                    items.append(self._decode(sample, rng))
                except DECODE_ERRORS as exc:
                    passed.skipped(sample.get("__url__", "?"), sample["__key__"], str(exc))
            num_skipped, num_flagged = passed.take()
            yield {**self._collate(items), "num_skipped": num_skipped, "num_flagged": num_flagged}


def excluded_keys_of(config: TrainConfig) -> frozenset[str]:
    """Flagged keys of every set plus `config.excluded_keys`: what the loader never yields."""
    keys = set(config.excluded_keys)
    for root in config.shards:
        keys |= flagged_keys(root)
    return frozenset(keys)


def build_loader(
    config: TrainConfig,
    *,
    tokenizer: Any,
    reference_processor: Any,
    num_samples: int,
    world_size: int = 1,
    latent_factor: int = SD_LATENT_FACTOR,
) -> DataLoader:
    """A DataLoader (batch_size=None: batches are made in the workers) over `config.shards`, mixed by
    `config.shard_weights` when given.

    `num_samples` (the sets' total, from `check_shards`) sets the epoch length unless
    `config.epoch_samples` does; each rank reads `epoch_samples / world_size` samples per epoch.
    `latent_factor`: pixels per latent cell of the model's VAE (`CustomizationModel.vae_scale_factor`).
    """
    weights = None
    if config.shard_weights is None:
        urls = [str(p) for p in resolve_shards(config.shards)]
    else:
        paths, weights = shard_draw_weights(config.shards, config.shard_weights)
        urls = [str(p) for p in paths]
    num_workers = max(1, config.num_workers)
    epoch_samples = config.epoch_samples or num_samples
    batches_per_worker = max(1, epoch_samples // (config.batch_size * world_size * num_workers))
    dataset = ShardBatches(
        urls,
        tokenizer=tokenizer,
        reference_processor=reference_processor,
        resolution_px=config.resolution_px,
        batch_size=config.batch_size,
        batches_per_worker=batches_per_worker,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        prompt_dropout=config.prompt_dropout,
        reference_dropout=config.reference_dropout,
        excluded_keys=excluded_keys_of(config),
        augmentation=Augmentation(enabled=config.augment_reference),
        shard_weights=weights,
        latent_factor=latent_factor,
    )
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=config.num_workers,
        persistent_workers=False,
        prefetch_factor=2 if config.num_workers > 0 else None,
    )

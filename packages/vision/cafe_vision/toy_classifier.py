"""The toy classifier: a small CNN that reads a toy image's subject and scene back from its pixels.

The `toy` scorer preset (`cafe_vision.toy_scorers`) measures generated toy images with it. It is
trained once, on output of the renderer (`cafe_core.toy`), and cached like every other built model
(`cafe_vision.model_cache`; the recipe, with `CLASSIFIER_VERSION`, every training setting and the
torch version, is the cache key). It never sees anything a customization model drew: it is the
measuring instrument, not the model under test, so it is trained on every subject, the held-out
ones too, in every scene.

Heads: shape (6), colour (8) and pattern (3) of the main object, background (6), position (3) and
size (3), and a per-pixel mask (object vs background) at 32 px. Inputs are 32 px RGB (the toy
model's size): `prepare` resizes other sizes and flattens RGBA cut-outs onto `REFERENCE_BACKGROUND_RGB`.

Training data, drawn once into a pool from `seed` (rendering seeds below 2**31, so tests can draw
renderings it never saw above that):
- renderings of all 144 subjects in all 54 scenes (`renders_per_scene` each, a share of the extra ones
  through a JPEG round trip, as the improve round stores its candidates): every head; small subjects
  are drawn `small_weight` times as often (their stripes and dots are 1 to 2 pixels: the hard cases);
- reference views, the subject cut out as the data engine frames references (`compose_reference`),
  on the plain grey background (as `prepare` shows an RGBA reference) and as its bare RGB crop (as
  `cafe eval` opens a reference file, alpha dropped): the identity heads and the mask;
- subject-free images, background textures alone (background head; empty mask) and pixel noise (empty
  mask only), so that the mask head finds nothing where nothing was drawn.
Each step augments its batch for what a small VAE + diffusion model draws: shifts of up to
`max_shift_px`, colour jitter, gaussian blur (its strength scaled by the subject's size, so that it
never wipes out the pattern it is asked to read) and pixel noise.

About 90 s on one CPU thread, once per cache; `TRAINING_SEED_LIMIT` bounds the seeds it saw.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from cafe_core.toy import (
    BACKGROUND_NAMES,
    COLOUR_NAMES,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZE_NAMES,
    SIZES,
    all_scenes,
    all_subjects,
    render,
)
from cafe_core.toy.backgrounds import texture
from cafe_vision.compose import DEFAULT_MARGIN, compose_reference
from cafe_vision.cutout import alpha_mask, on_background
from cafe_vision.images import to_rgb
from cafe_vision.model_cache import cached_build

# Bump when the training or the network changes in a way the spec does not capture (cache key).
CLASSIFIER_VERSION = 1
IMAGE_SIZE_PX = 32
# References (RGBA cut-outs) are classified flattened onto this plain grey: unlike white, it is far
# from every toy colour and from the snow.
REFERENCE_BACKGROUND_RGB = (128, 128, 128)
HEADS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": COLOUR_NAMES,
    "pattern": PATTERNS,
    "background": BACKGROUND_NAMES,
    "position": POSITIONS,
    "size": SIZE_NAMES,
}
IDENTITY_HEADS = ("shape", "colour", "pattern")
SCENE_HEADS = ("background", "position", "size")
IDENTITY_DIM = sum(len(HEADS[name]) for name in IDENTITY_HEADS)  # 6 + 8 + 3 = 17
WEIGHTS_NAME = "toy-classifier.pt"
SPEC_NAME = "toy-classifier.json"
# Rendering seeds of the training pool lie below this; seeds at or above it were never trained on.
TRAINING_SEED_LIMIT = 2**31
_IGNORE = -1  # a label the loss skips (a reference view has no scene; noise has nothing)
_EMPTY_PER_BACKGROUND = 64  # subject-free textures of each background in the pool


@dataclass(frozen=True)
class ToyClassifierSpec:
    """Everything the classifier's training depends on; all of it (and the torch version) is its cache key.

    seed: draws the pool, the initial weights, the batches and their augmentation.
    renders_per_scene: renderings of each (subject, scene) pair in the pool.
    steps / batch_size / learning_rate / weight_decay: AdamW with a one-cycle schedule.
    width: channels of the first convolution (the others are 2x, 4x, 8x of it).
    reference_fraction / empty_fraction / noise_fraction: shares of each batch that are reference
        views, background textures without a subject, and pixel noise; the rest are renderings.
    small_weight: how much more often a rendering of a small subject is drawn than one of a medium or
        large one (small subjects' stripes and dots are 1 to 2 pixels: the hardest cases).
    jpeg_probability: the share of each pair's extra renderings stored through a JPEG round trip.
    max_shift_px, colour_jitter, blur_probability, max_blur_sigma_px, max_noise_std: the augmentation.
    num_threads: torch threads while training (results are bit-for-bit the same only at equal threads).
    """

    name: str
    seed: int
    renders_per_scene: int
    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    width: int
    reference_fraction: float
    empty_fraction: float
    noise_fraction: float
    small_weight: float
    jpeg_probability: float
    max_shift_px: int
    colour_jitter: float
    blur_probability: float
    max_blur_sigma_px: float
    max_noise_std: float
    num_threads: int

    def __post_init__(self) -> None:
        for field, value in (
            ("renders_per_scene", self.renders_per_scene),
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("width", self.width),
            ("num_threads", self.num_threads),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"toy classifier spec {self.name!r}: {field}={value!r} must be an int >= 1")
        shares = self.reference_fraction + self.empty_fraction + self.noise_fraction
        if min(self.reference_fraction, self.empty_fraction, self.noise_fraction) < 0 or shares >= 1:
            raise ValueError(
                f"toy classifier spec {self.name!r}: reference, empty and noise fractions must be >= 0 and sum to"
                f" under 1 (renderings take the rest); got {shares}"
            )

    def recipe(self) -> dict[str, object]:
        """The cache key: the version, every setting and the torch version."""
        return {"version": CLASSIFIER_VERSION, "torch": torch.__version__, **asdict(self)}


# Measured on 2 shared cores (one thread): about 8 s for the pool and 80 s for the 700 steps; on fresh
# renderings every head reads >= 0.99 (pattern, the hardest, about 0.99: 1-pixel stripes of small subjects).
TOY_CLASSIFIER = ToyClassifierSpec(
    name="toy-classifier",
    seed=0,
    renders_per_scene=2,
    steps=700,
    batch_size=64,
    learning_rate=6e-3,
    weight_decay=1e-4,
    width=16,
    reference_fraction=0.2,
    empty_fraction=0.04,
    noise_fraction=0.04,
    small_weight=2.0,
    jpeg_probability=0.25,
    max_shift_px=1,
    colour_jitter=0.05,
    blur_probability=0.3,
    max_blur_sigma_px=0.8,
    max_noise_std=0.04,
    # One thread: as fast as two on these small convolutions when other work shares the cores (OpenMP
    # threads spin-waiting on each other collapse), and the same bits wherever it is built.
    num_threads=1,
)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ToyClassifierNet(nn.Module):
    """Input (B, 3, 32, 32) in [0, 1]. Output: logits per head, mask logits (B, 32, 32), features
    (B, `features_dim`), the penultimate layer every head reads.

    The features join a flattened 4 x 4 map (where the subject stands and how big it is, the
    background) and a full-resolution texture map and the 16 px map pooled over the mask head's
    pixels (the subject's colour and pattern without the background's texture); the mask decoder
    joins the full-resolution and the 16 px maps.
    """

    SPATIAL = 256

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.stem = _block(3, w)  # full resolution: 1-pixel stripes of small subjects live here
        self.texture = _block(w, w)  # 5 x 5 at full resolution: tells 1-pixel stripes from 2 x 2 dots
        self.down16 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))
        self.down8 = _block(2 * w, 4 * w, 2)
        self.down4 = _block(4 * w, 8 * w, 2)
        self.spatial = nn.Sequential(nn.Flatten(), nn.Linear(8 * w * 16, self.SPATIAL), nn.ReLU(inplace=True))
        self.features_dim = self.SPATIAL + 2 * (w + 2 * w)
        self.heads = nn.ModuleDict({name: nn.Linear(self.features_dim, len(labels)) for name, labels in HEADS.items()})
        self.mask = nn.Sequential(nn.Conv2d(3 * w, w, 1), nn.ReLU(inplace=True), nn.Conv2d(w, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        full = self.stem(x - 0.5)
        half = self.down16(full)
        eighth = self.down8(half)
        mask = self.mask(torch.cat([full, F.interpolate(half, scale_factor=2.0, mode="nearest")], dim=1))
        # Pooled over the pixels the mask head gives the subject (so the background's texture does not
        # mix in); detached, so that the identity heads do not bend the mask to suit them.
        weight = mask.detach().sigmoid()
        pooled = [*_masked_pool(self.texture(full), weight), *_masked_pool(half, F.avg_pool2d(weight, 2))]
        features = torch.cat([self.spatial(self.down4(eighth)), *pooled], dim=1)
        logits = {name: head(features) for name, head in self.heads.items()}
        return logits, mask[:, 0], features


def _masked_pool(maps: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) mean and max of `maps` (B, C, H, W) over the pixels `weight` (B, 1, H, W) in [0, 1] picks."""
    total = weight.sum(dim=(2, 3)).clamp_min(1e-3)
    mean = (maps * weight).sum(dim=(2, 3)) / total
    peak = (maps * weight).amax(dim=(2, 3))
    return mean, peak


def prepare(image: Image.Image) -> np.ndarray:
    """`image` as the classifier reads it: (32, 32, 3) uint8. An RGBA cut-out is flattened onto the grey
    `REFERENCE_BACKGROUND_RGB`; any other size is resized (bilinear; aspect not kept: toy images are square)."""
    rgb = on_background(image, REFERENCE_BACKGROUND_RGB) if image.mode in ("RGBA", "LA", "PA") else to_rgb(image)
    if rgb.size != (IMAGE_SIZE_PX, IMAGE_SIZE_PX):
        rgb = rgb.resize((IMAGE_SIZE_PX, IMAGE_SIZE_PX), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def prepare_mask(mask: np.ndarray) -> np.ndarray:
    """A bool (H, W) mask brought to 32 x 32 as `prepare` brings its image (bool)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == (IMAGE_SIZE_PX, IMAGE_SIZE_PX):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (IMAGE_SIZE_PX, IMAGE_SIZE_PX), Image.Resampling.BILINEAR
    )
    return np.asarray(resized) >= 128


@dataclass(frozen=True)
class ToyPredictions:
    """What the classifier reads from N images.

    labels: head -> (N,) int64 index into `HEADS[head]`; probabilities: head -> (N, classes) float32;
    mask_probability: (N, 32, 32) float32, the chance that each pixel is the object's;
    features: (N, features_dim) float32, the penultimate layer (not normalised).
    """

    labels: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]
    mask_probability: np.ndarray
    features: np.ndarray


class ToyClassifier:
    """The trained network, ready to read images. Load with `load_toy_classifier`."""

    def __init__(self, net: ToyClassifierNet, spec: ToyClassifierSpec, folder: Path, device: torch.device) -> None:
        self.net = net.eval().to(device)
        self.spec = spec
        self.folder = folder
        self.device = device

    @torch.inference_mode()
    def predict(self, images: Sequence[Image.Image] | np.ndarray, *, batch_size: int = 256) -> ToyPredictions:
        """Predictions for PIL images (any size or mode, via `prepare`) or an (N, 32, 32, 3) uint8 array."""
        pixels = images if isinstance(images, np.ndarray) else _stack([prepare(image) for image in images])
        if pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE_PX, IMAGE_SIZE_PX, 3):
            raise ValueError(f"toy classifier: pixels of shape {pixels.shape}; give (N, 32, 32, 3) uint8 or PIL images")
        chunks: list[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]] = []
        for start in range(0, len(pixels), batch_size):
            x = _to_tensor(pixels[start : start + batch_size]).to(self.device)
            logits, mask, features = self.net(x)
            chunks.append(
                ({k: v.softmax(dim=1).cpu() for k, v in logits.items()}, mask.sigmoid().cpu(), features.cpu())
            )
        if not chunks:
            empty = np.zeros((0,), dtype=np.int64)
            return ToyPredictions(
                {name: empty for name in HEADS},
                {name: np.zeros((0, len(labels)), np.float32) for name, labels in HEADS.items()},
                np.zeros((0, IMAGE_SIZE_PX, IMAGE_SIZE_PX), np.float32),
                np.zeros((0, self.net.features_dim), np.float32),
            )
        probabilities = {name: torch.cat([c[0][name] for c in chunks]).numpy() for name in HEADS}
        return ToyPredictions(
            labels={name: p.argmax(axis=1).astype(np.int64) for name, p in probabilities.items()},
            probabilities=probabilities,
            mask_probability=torch.cat([c[1] for c in chunks]).numpy(),
            features=torch.cat([c[2] for c in chunks]).numpy(),
        )


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    if not arrays:
        return np.zeros((0, IMAGE_SIZE_PX, IMAGE_SIZE_PX, 3), dtype=np.uint8)
    return np.stack(arrays)


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255.0


def toy_classifier_folder(spec: ToyClassifierSpec = TOY_CLASSIFIER, *, cache_dir: str | Path | None = None) -> Path:
    """The cached folder of the classifier `spec` trains, trained on the first call only (about 90 s)."""
    return cached_build(spec.name, spec.recipe(), lambda folder: _build(spec, folder), cache_dir=cache_dir)


def load_toy_classifier(
    spec: ToyClassifierSpec = TOY_CLASSIFIER, *, device: str | torch.device = "cpu", cache_dir: str | Path | None = None
) -> ToyClassifier:
    """The classifier of `spec` from the model cache (trained first if it is not there)."""
    from cafe_vision.devices import resolve_device

    folder = toy_classifier_folder(spec, cache_dir=cache_dir)
    net = ToyClassifierNet(spec.width)
    net.load_state_dict(torch.load(folder / WEIGHTS_NAME, map_location="cpu", weights_only=True))
    return ToyClassifier(net, spec, folder, resolve_device(device))


def _build(spec: ToyClassifierSpec, folder: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.num_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            net = train_toy_classifier(spec)
    finally:
        torch.set_num_threads(threads)
    torch.save(net.state_dict(), folder / WEIGHTS_NAME)
    (folder / SPEC_NAME).write_text(json.dumps(spec.recipe(), indent=2, sort_keys=True))


@dataclass(frozen=True)
class _Pool:
    """Training images (N, 32, 32, 3) uint8, masks (N, 32, 32) bool, labels (N, heads) int64 (-1: none)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8)


def _pools(spec: ToyClassifierSpec) -> tuple[_Pool, _Pool, _Pool]:
    """(renderings, reference views, backgrounds without a subject), drawn from `spec.seed`."""
    rng = np.random.default_rng(spec.seed)
    renders: list[np.ndarray] = []
    render_masks: list[np.ndarray] = []
    render_labels: list[list[int]] = []
    views: list[np.ndarray] = []
    view_masks: list[np.ndarray] = []
    view_labels: list[list[int]] = []
    no_scene = [_IGNORE] * len(SCENE_HEADS)
    for subject in all_subjects():
        identity = [SHAPES.index(subject.shape), COLOUR_NAMES.index(subject.colour), PATTERNS.index(subject.pattern)]
        for scene in all_scenes():
            where = [
                BACKGROUND_NAMES.index(scene.background),
                POSITIONS.index(scene.position),
                SIZE_NAMES.index(scene.size),
            ]
            for index, seed in enumerate(rng.integers(0, TRAINING_SEED_LIMIT, spec.renders_per_scene)):
                drawn = render(subject, scene, size_px=IMAGE_SIZE_PX, seed=int(seed))
                image = np.asarray(drawn.image)
                if index == 0:
                    # The first rendering also gives the reference views (the classifier is no model
                    # under test: it may see a cut-out and its own rendering).
                    cutout = compose_reference(
                        Image.fromarray(image), np.asarray(drawn.mask), drawn.box_xyxy, DEFAULT_MARGIN
                    )
                    mask = prepare_mask(alpha_mask(cutout))
                    for view in (cutout, cutout.convert("RGB")):
                        views.append(prepare(view))
                        view_masks.append(mask)
                        view_labels.append([*identity, *no_scene])
                elif rng.random() < spec.jpeg_probability:
                    image = _jpeg(image, int(rng.integers(60, 96)))
                renders.append(image)
                render_masks.append(np.asarray(drawn.mask))
                render_labels.append([*identity, *where])
    empties, empty_labels = [], []
    for name in BACKGROUND_NAMES:
        for _ in range(_EMPTY_PER_BACKGROUND):
            empties.append(
                texture(name, IMAGE_SIZE_PX, np.random.default_rng(int(rng.integers(0, TRAINING_SEED_LIMIT))))
            )
            empty_labels.append([_IGNORE] * len(IDENTITY_HEADS) + [BACKGROUND_NAMES.index(name), _IGNORE, _IGNORE])
    return (
        _Pool(np.stack(renders), np.stack(render_masks), np.asarray(render_labels, dtype=np.int64)),
        _Pool(np.stack(views), np.stack(view_masks), np.asarray(view_labels, dtype=np.int64)),
        _Pool(
            np.stack(empties),
            np.zeros((len(empties), IMAGE_SIZE_PX, IMAGE_SIZE_PX), bool),
            np.asarray(empty_labels, dtype=np.int64),
        ),
    )


def _shift(x: torch.Tensor, mask: torch.Tensor, max_shift_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image (and its mask) moved by up to `max_shift_px` in x and y, edges repeated."""
    if max_shift_px == 0:
        return x, mask
    s = max_shift_px
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    padded_mask = F.pad(mask[:, None], (s, s, s, s), mode="constant", value=0.0)[:, 0]
    offsets = torch.randint(0, 2 * s + 1, (len(x), 2))
    size = x.shape[-1]
    shifted = torch.stack([padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets.tolist())])
    shifted_mask = torch.stack(
        [padded_mask[i, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets.tolist())]
    )
    return shifted, shifted_mask


def _blur(x: torch.Tensor, probability: float, max_sigma_px: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of a random sigma in [0.3, max_sigma_px[i]] on each image i with `probability`."""
    count = len(x)
    sigma = 0.3 + torch.rand(count) * (max_sigma_px - 0.3).clamp_min(0.0)
    taps = torch.arange(-2, 3, dtype=torch.float32)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    identity = (taps == 0).float().expand(count, -1)
    kernel = torch.where((torch.rand(count) < probability)[:, None], kernel, identity)
    kernel = kernel.repeat_interleave(3, dim=0)  # one kernel per channel of each image
    flat = x.reshape(1, count * 3, *x.shape[-2:])
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=count * 3)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), kernel[:, None, :, None], groups=count * 3)
    return flat.reshape(x.shape)


_SIZE_FRACTIONS = torch.tensor([size.fraction for size in SIZES])


def _augment(
    x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, spec: ToyClassifierSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifts, colour jitter, blur and pixel noise. Blur scales with the subject's size (`labels`' size
    column; unsized views count as large): a small subject's 1-pixel stripes do not survive the blur a
    large one's 3-pixel stripes do, and an augmentation must not make the label unreadable."""
    x, mask = _shift(x, mask, spec.max_shift_px)
    sizes = labels[:, list(HEADS).index("size")]
    fraction = torch.where(sizes >= 0, _SIZE_FRACTIONS[sizes.clamp_min(0)], _SIZE_FRACTIONS.max())
    max_sigma_px = spec.max_blur_sigma_px * fraction / _SIZE_FRACTIONS.max()
    count = len(x)
    j = spec.colour_jitter
    gain = 1.0 + j * (2 * torch.rand(count, 1, 1, 1) - 1) + 0.5 * j * (2 * torch.rand(count, 3, 1, 1) - 1)
    offset = 0.5 * j * (2 * torch.rand(count, 1, 1, 1) - 1)
    x = x * gain + offset
    x = _blur(x, spec.blur_probability, max_sigma_px)
    x = x + torch.randn_like(x) * torch.rand(count, 1, 1, 1) * spec.max_noise_std
    return x.clamp(0.0, 1.0), mask


def _noise_images(count: int) -> torch.Tensor:
    """Uniform pixel noise, half of it smooth (drawn at 4 or 8 px and upsampled)."""
    fine = torch.rand(count, 3, IMAGE_SIZE_PX, IMAGE_SIZE_PX)
    coarse = F.interpolate(torch.rand(count, 3, 8, 8), size=IMAGE_SIZE_PX, mode="bilinear", align_corners=False)
    return torch.where((torch.rand(count) < 0.5)[:, None, None, None], fine, coarse)


def _sample(
    pool: _Pool, count: int, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`count` rows of `pool`, drawn with replacement (uniformly, or by `weights`)."""
    if weights is None:
        rows = torch.randint(0, len(pool.images), (count,)).numpy()
    else:
        rows = torch.multinomial(weights, count, replacement=True).numpy()
    return (
        _to_tensor(pool.images[rows]),
        torch.from_numpy(pool.masks[rows]).float(),
        torch.from_numpy(pool.labels[rows]),
    )


def train_toy_classifier(spec: ToyClassifierSpec) -> ToyClassifierNet:
    """A network trained by `spec` (uses torch's global generator: seed it, as `_build` does)."""
    renders, views, empties = _pools(spec)
    # channels-last convolutions run about 1.4x faster on CPU at these sizes.
    net = ToyClassifierNet(spec.width).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.learning_rate, total_steps=spec.steps)
    num_views = round(spec.batch_size * spec.reference_fraction)
    num_empty = round(spec.batch_size * spec.empty_fraction)
    num_noise = round(spec.batch_size * spec.noise_fraction)
    num_renders = spec.batch_size - num_views - num_empty - num_noise
    small = torch.from_numpy(renders.labels[:, list(HEADS).index("size")] == SIZE_NAMES.index("small"))
    render_weights = torch.where(small, spec.small_weight, 1.0).double()
    net.train()
    for _ in range(spec.steps):
        parts = [_sample(renders, num_renders, render_weights), _sample(views, num_views), _sample(empties, num_empty)]
        x = torch.cat([p[0] for p in parts])
        mask = torch.cat([p[1] for p in parts])
        labels = torch.cat([p[2] for p in parts])
        x, mask = _augment(x, mask, labels, spec)
        x = torch.cat([x, _noise_images(num_noise)])
        mask = torch.cat([mask, torch.zeros(num_noise, IMAGE_SIZE_PX, IMAGE_SIZE_PX)])
        labels = torch.cat([labels, torch.full((num_noise, len(HEADS)), _IGNORE, dtype=torch.int64)])
        logits, mask_logits, _ = net(x.contiguous(memory_format=torch.channels_last))
        loss = F.binary_cross_entropy_with_logits(mask_logits, mask)
        for column, name in enumerate(HEADS):
            target = labels[:, column]
            # Summed over the labelled rows only: a batch may hold none for a head.
            loss = loss + F.cross_entropy(logits[name], target, ignore_index=_IGNORE, reduction="sum") / max(
                1, int((target != _IGNORE).sum())
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return net.to(memory_format=torch.contiguous_format).eval()


def identity_vector(labels: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 17) one-hot shape | colour | pattern of predicted `labels` (each row has three ones)."""
    rows = len(labels["shape"])
    parts = []
    for name in IDENTITY_HEADS:
        one_hot = np.zeros((rows, len(HEADS[name])), dtype=np.float32)
        one_hot[np.arange(rows), labels[name]] = 1.0
        parts.append(one_hot)
    return np.concatenate(parts, axis=1)

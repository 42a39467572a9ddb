"""Procedural background textures: each background is its dominant colour plus a texture of its own
(blades of grass, sand ripples, snow flakes, stars, bricks and mortar, waves), drawn from a seeded
generator so that the same seed gives the same pixels and another seed another texture.
"""

from __future__ import annotations

import numpy as np

from cafe_core.toy.world import background


def _noise(rng: np.random.Generator, size_px: int, sigma: float) -> np.ndarray:
    """Per-pixel grey noise, (H, W, 1), so it shifts brightness without changing the hue."""
    return rng.normal(0.0, sigma, (size_px, size_px, 1)).astype(np.float32)


def _grass(base: np.ndarray, size_px: int, rng: np.random.Generator) -> np.ndarray:
    # Blades: brightness that varies per column and slowly along it, so strokes run vertically.
    blade_px = max(2, size_px // 8)
    rows = -(-size_px // blade_px)
    blades = np.repeat(rng.normal(0.0, 1.0, (rows, size_px)), blade_px, axis=0)[:size_px]
    shade = 1.0 + 0.18 * blades[..., None].astype(np.float32)
    return base * shade + _noise(rng, size_px, 6.0)


def _sand(base: np.ndarray, size_px: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size_px, 0:size_px].astype(np.float32) / size_px
    phase, wobble = rng.uniform(0.0, 2 * np.pi, 2)
    ripples = np.sin(2 * np.pi * 5.0 * y + 1.5 * np.sin(2 * np.pi * x + wobble) + phase)
    return base + 10.0 * ripples[..., None] + _noise(rng, size_px, 7.0)


def _snow(base: np.ndarray, size_px: int, rng: np.random.Generator) -> np.ndarray:
    image = base + _noise(rng, size_px, 3.0)
    flakes = rng.random((size_px, size_px)) < 0.04
    image[flakes] = (200.0, 212.0, 232.0)
    return image


def _night_sky(base: np.ndarray, size_px: int, rng: np.random.Generator) -> np.ndarray:
    glow = np.linspace(0.0, 18.0, size_px, dtype=np.float32)[:, None, None]  # lighter towards the horizon
    image = base + glow + _noise(rng, size_px, 2.0)
    stars = rng.random((size_px, size_px)) < 0.025
    image[stars] = rng.uniform(190.0, 250.0, (int(stars.sum()), 1))
    return image


def _brick_wall(base: np.ndarray, size_px: int, rng: np.random.Generator) -> np.ndarray:
    brick_h = max(3, size_px // 8)
    brick_w = 2 * brick_h
    dy, dx = rng.integers(0, brick_h), rng.integers(0, brick_w)
    y, x = np.mgrid[0:size_px, 0:size_px]
    row = (y + dy) // brick_h
    shifted_x = x + dx + (row % 2) * (brick_w // 2)  # every other row is offset by half a brick
    column = shifted_x // brick_w
    # One brightness per brick (hash of its row and column into a table drawn from the seed).
    table = rng.normal(0.0, 1.0, 64).astype(np.float32)
    per_brick = table[(row * 7 + column * 13) % 64]
    image = base * (1.0 + 0.12 * per_brick[..., None]) + _noise(rng, size_px, 4.0)
    mortar = ((y + dy) % brick_h == 0) | (shifted_x % brick_w == 0)
    image[mortar] = (190.0, 185.0, 175.0)
    return image


def _water(base: np.ndarray, size_px: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size_px, 0:size_px].astype(np.float32) / size_px
    phase, sway = rng.uniform(0.0, 2 * np.pi, 2)
    waves = np.sin(2 * np.pi * 4.0 * y + 1.2 * np.sin(2 * np.pi * 2.0 * x + sway) + phase)
    crests = np.clip(waves - 0.6, 0.0, None) / 0.4  # thin light bands on the crests
    return base + (6.0 * waves + 45.0 * crests)[..., None] + _noise(rng, size_px, 4.0)


_TEXTURES = {
    "grass": _grass,
    "sand": _sand,
    "snow": _snow,
    "night_sky": _night_sky,
    "brick_wall": _brick_wall,
    "water": _water,
}


def texture(name: str, size_px: int, rng: np.random.Generator) -> np.ndarray:
    """The background `name` at `size_px` x `size_px`, (H, W, 3) uint8, its texture drawn from `rng`."""
    base = np.asarray(background(name).rgb, dtype=np.float32)
    image = _TEXTURES[name](base, size_px, rng)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)

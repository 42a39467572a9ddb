"""`cafe generate`: draw a subject from one reference photo with a trained run. Imports the model only when run.

    cafe generate --checkpoint RUN --reference dog.png --prompt "a photo of the dog on a beach" --out beach.png
    cafe generate --checkpoint RUN/checkpoints/step-000500 ... --num-images 4 --seed 7 --size 512

RUN is a run folder (its latest checkpoint is used) or one `checkpoints/step-NNNNNN` folder. The base models
are the run's preset (its checkpoint's config.json); the trained weights are the checkpoint's EMA
(`ema.safetensors`) when it has one, else `trainable.safetensors` (`--weights` picks). With
`--num-images 1` the image is written to OUT; with N > 1 to OUT's name with `-0`, `-1`, ... before `.png`
(beach-0.png, beach-1.png, ...): image i is the i-th of one batch drawn with `--seed`. Each PNG carries
its settings (checkpoint, step, prompt, seed, sampler) as a `cafe` text chunk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from cafe_cli.console import fail, out, progress

DTYPES = ("float32", "float16", "bfloat16")
SIZE_MULTIPLE_PX = 8  # cafe_model.pipeline's rule; repeated so the check needs no torch import


def output_paths(out_path: Path, num_images: int) -> list[Path]:
    """OUT itself for one image; OUT-0.png, OUT-1.png, ... for several."""
    if num_images == 1:
        return [out_path]
    return [out_path.with_name(f"{out_path.stem}-{i}{out_path.suffix}") for i in range(num_images)]


def _read_reference(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            # The encoder takes RGB, or RGBA (a cut-out, laid on white); palette and grey photos are converted.
            if image.mode in ("RGB", "RGBA"):
                return image.copy()
            return image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    except FileNotFoundError:
        fail(f"--reference {path}: no such file")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        fail(f"--reference {path}: not a readable image ({exc})")


def generate(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", "-c", help="a run folder (latest checkpoint) or one step-NNNNNN folder")
    ],
    reference: Annotated[Path, typer.Option("--reference", "-r", help="the subject: a photo or an RGBA cut-out")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="the scene to draw the subject in")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="PNG to write (-0, -1, ... added for several)")],
    negative_prompt: Annotated[str, typer.Option(help="what to steer away from")] = "",
    steps: Annotated[int, typer.Option(min=1, help="sampler steps (DDIM)")] = 30,
    guidance: Annotated[float, typer.Option(help="text guidance scale")] = 7.5,
    reference_guidance: Annotated[
        float | None, typer.Option(help="reference guidance scale (default: --guidance, i.e. stock CFG)")
    ] = None,
    reference_scale: Annotated[float, typer.Option(help="weight of the reference attention (0 = text only)")] = 1.0,
    seed: Annotated[int, typer.Option(help="the same seed and settings give the same images")] = 0,
    size: Annotated[
        int | None, typer.Option("--size", help="image side in pixels, a multiple of 8 (default: the preset's)")
    ] = None,
    num_images: Annotated[int, typer.Option(min=1, help="images of the one prompt (one batch)")] = 1,
    weights: Annotated[str, typer.Option(help="auto (EMA when saved), ema, or trainable")] = "auto",
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ... (default: cuda when present)")] = None,
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16 (half precision on GPUs)")] = "float32",
) -> None:
    """Generate images of the reference's subject in the prompt's scene with a trained run's weights."""
    from cafe_model.trained import WEIGHT_CHOICES, find_checkpoint

    # The cheap checks first (no torch imported yet), so a typo fails before seconds of imports and loading.
    if size is not None and (size < SIZE_MULTIPLE_PX or size % SIZE_MULTIPLE_PX):
        lower = max(SIZE_MULTIPLE_PX, size // SIZE_MULTIPLE_PX * SIZE_MULTIPLE_PX)
        upper = lower + SIZE_MULTIPLE_PX
        fail(f"--size {size}: not a positive multiple of {SIZE_MULTIPLE_PX} (the VAE's scale); use {lower} or {upper}")
    if out_path.suffix.lower() != ".png":
        fail(f"--out {out_path}: must end in .png (the settings are saved in a PNG text chunk)")
    if weights not in WEIGHT_CHOICES:
        fail(f"--weights {weights!r}: must be one of {', '.join(WEIGHT_CHOICES)}")
    if dtype not in DTYPES:
        fail(f"--dtype {dtype!r}: must be one of {', '.join(DTYPES)}")
    reference_image = _read_reference(reference)
    try:
        found = find_checkpoint(checkpoint, weights=weights)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))

    import torch

    from cafe_model.presets import get_preset
    from cafe_model.trained import load_trained_pipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: CUDA is not available here; use --device cpu")
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    text_guidance = guidance
    ref_guidance = guidance if reference_guidance is None else reference_guidance
    with progress() as bar:
        bar.add_task(f"loading {found.preset} + {found.path.name}/{found.weights_path.name}", total=None)
        try:
            pipeline, found = load_trained_pipeline(found.path, weights=weights, device=device, dtype=torch_dtype)
        except (OSError, ValueError) as exc:  # missing base weights (with the download command), a misfit
            fail(str(exc))
    with progress() as bar:
        bar.add_task(f"generating {num_images} image(s), {steps} steps", total=None)
        try:
            images = pipeline(
                reference_image,
                prompt,
                negative_prompt=negative_prompt,
                num_steps=steps,
                text_guidance=text_guidance,
                reference_guidance=ref_guidance,
                reference_scale=reference_scale,
                seed=seed,
                height_px=size,
                width_px=size,
                batch_size=num_images,
            )
        except ValueError as exc:  # a bad scale
            fail(str(exc))
    settings = {
        "checkpoint": str(found.path),
        "step": found.step,
        "preset": found.preset,
        "weights": found.weights_path.name,
        "reference": str(reference),
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "sampler": {
            "name": type(pipeline.scheduler).__name__,
            "num_steps": steps,
            "text_guidance": text_guidance,
            "reference_guidance": ref_guidance,
            "reference_scale": reference_scale,
        },
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for index, (path, image) in enumerate(zip(output_paths(out_path, num_images), images, strict=True)):
        info = PngInfo()
        info.add_text("cafe", json.dumps({**settings, "index": index}))
        image.save(path, pnginfo=info)
        out.print(f"wrote {path} ({image.width}x{image.height})")
    out.print(f"from {found.path} (step {found.step}, {found.weights_path.name}, preset {found.preset})")
    if get_preset(found.preset).is_random:
        out.print(f"[yellow]The {found.preset} preset's models are random: these images are noise, not the subject.[/]")

"""Self-improvement round FLOPs: what scoring one candidate costs against generating it, for the real architectures.

Run from the repository root:

    .venv/bin/python bench/improve_flops.py               # the base round's recipe: 30 steps, 4 per pair, 512 px
    .venv/bin/python bench/improve_flops.py --steps 50 --candidates 8 --size 768
    make bench                                            # every benchmark, this one with its defaults

It takes about 40 s on 2 cores and under 3 GB: every model but Grounding DINO is built and run on
the meta device (shapes only, no weights, no arithmetic); Grounding DINO's forward needs real values
(data-dependent ops such as `nonzero` in its text masks), so it runs once on the CPU in float32 at
random init, on one thread. Nothing is downloaded: every model is its architecture at random init,
and FLOPs do not depend on the weights.

What it measures: matmul, conv and attention FLOPs (torch.utils.flop_counter.FlopCounterMode; one
multiply-add is 2 FLOPs) of each model call a round makes for one candidate, with the `base` round's
settings (`improve_recipe("base", ...)`: num_steps, text_guidance, reference_guidance,
candidates_per_pair; the size is the sd15 preset's 512 px). Per-pair calls are divided by
candidates_per_pair, as a pair's candidates share them.

- generation (cafe_model.pipeline.CustomizationPipeline): the SD 1.5 UNet (`SD15_ARCHITECTURE`)
  with cafe's decoupled reference attention installed (`add_decoupled_cross_attention`, the linear
  projector's 4 tokens next to 77 text tokens), once per step per guidance branch
  (`guidance_branches`); the VAE decoder at the generated size; per pair, the SD 1.5 CLIP text
  encoder at 77 tokens once per distinct prompt (the prompt, plus the negative prompt when guidance
  runs an unconditional branch) and the CLIP ViT-L/14 vision reference encoder at 224 px once.
- scoring (cafe_vision.scorers.Scorers with the `base` scorer preset): Grounding DINO tiny
  (transformers' GroundingDinoConfig defaults, which are grounding-dino-tiny's: Swin-T, BERT-base,
  6 + 6 layers, 900 queries) on the candidate fitted into the preset's 800 px square, prompt
  "a dog." (5 tokens); SAM ViT-B's image encoder at 1024 px and its prompt encoder and mask decoder
  for one box (cafe_vision.sam_decode.decode_boxes, the decoder path the segmenter runs); CLIP
  ViT-B/32 (CLIPConfig defaults) on the candidate at 224 px, plus per pair the reference and the
  prompt (12 tokens, the length of the prompt bank's prompts); DINO ViT-S/16 at 224 px on the
  subject cut-out, plus per pair the reference view.

What it leaves out, so read the ratio as an estimate:
- ops FlopCounterMode does not count: grid_sample and the weighted sum inside Grounding DINO's
  deformable attention (its linear projections are counted), norms, softmax, activations,
  elementwise ops, interpolation (SAM's mask upsampling, the VAE's upsampling), the scheduler step
  and the guidance combine, image preprocessing, the copy-paste score, dedupe and filtering.
- the subject is assumed found in every candidate: a candidate with no box skips SAM and DINO, so
  scoring is an upper bound here.
- FLOPs are not time. UNet and VAE convolutions and large matmuls run near a GPU's peak; Grounding
  DINO's deformable attention (gathers), SAM's small mask decoder and the many small calls of
  scoring run far less efficiently, so measured scoring time is a larger share than these FLOPs
  (bench/improve.py measures the time).

Human-readable lines come first (GFLOPs per call, calls per candidate, GFLOPs per candidate, share
of its side); the ratio lines (`name value`) are the last thing printed:
- improve_flops_largest_scoring_part_share_base: the largest scoring part's share of scoring (the
  part is named in the lines above)
- improve_flops_score_vs_generation_base: scoring / generation, per candidate, last.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

GFLOP = 1e9
# bert-base-uncased ids of "[CLS] a dog . [SEP]": the grounder's prompt for a subject "a dog"
# (Grounding DINO hard-codes these ids for [CLS], [SEP] and "."; see cafe_vision.bert_tokenizer).
GROUNDER_PROMPT_IDS = (101, 1037, 3899, 1012, 102)
# "a brown dog on top of pink fabric" with CLIP's start and end tokens: the prompt bank's length.
CLIP_PROMPT_TOKENS = 12
# The crop size of openai/clip-vit-base-patch32's and facebook/dino-vits16's image processors.
SCORER_IMAGE_PX = 224

Side = Literal["generation", "scoring"]


@dataclass(frozen=True)
class Recipe:
    """The settings a round's FLOPs depend on."""

    num_steps: int
    num_branches: int
    candidates_per_pair: int
    size_px: int
    grounder_image_size_px: int


@dataclass(frozen=True)
class Part:
    """One model call of a round: its FLOPs and how many times one candidate pays for it."""

    side: Side
    name: str
    flops_per_call: int
    calls_per_candidate: float

    @property
    def flops_per_candidate(self) -> float:
        return self.flops_per_call * self.calls_per_candidate


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode counts the CUDA attention kernels and the math path (the meta device's), but not
# the CPU's fused kernel, which Grounding DINO's BERT and attention reach on the CPU.
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def count_flops(run: Callable[[], object]) -> int:
    """The matmul / conv / attention FLOPs of `run()`."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        run()
    return counter.get_total_flops()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from cafe_model.pipeline import check_size_px

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the base round's)")
    parser.add_argument("--candidates", type=int, default=None, help="candidates per pair (default: the base round's)")
    parser.add_argument("--size", type=int, default=None, help="generated side in px (default: the sd15 preset's)")
    args = parser.parse_args(argv)
    for name in ("steps", "candidates"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} {value}: it must be at least 1")
    if args.size is not None:
        try:
            check_size_px("--size", args.size)
        except ValueError as error:
            parser.error(str(error))
    return args


def base_recipe(args: argparse.Namespace) -> Recipe:
    """The `base` round's settings, with the command line's overrides."""
    from cafe_model.guidance import guidance_branches
    from cafe_model.presets import get_preset
    from cafe_pipelines.improve_config import improve_recipe
    from cafe_vision.scorer_presets import get_scorer_preset

    # The paths are never touched: the recipe is read for its sampler and pair settings.
    config = improve_recipe("base", checkpoint="unused", shards=["unused-in"], output="unused-out")
    # size_px None means the checkpoint's training resolution: sd15's for an SD 1.5 checkpoint.
    size_px = config.size_px or get_preset("sd15").resolution_px
    return Recipe(
        num_steps=args.steps or config.num_steps,
        num_branches=len(guidance_branches(config.text_guidance, config.reference_guidance)),
        candidates_per_pair=args.candidates or config.candidates_per_pair,
        size_px=args.size or size_px,
        grounder_image_size_px=get_scorer_preset("base").grounder_image_size_px,
    )


# ---- generation -----------------------------------------------------------------------------------


def sd15_models():
    """SD 1.5's UNet, VAE and text encoder on the meta device: cafe's own random builder, shapes only."""
    from cafe_model.presets import SD15_ARCHITECTURE
    from cafe_model.random_diffusion import diffusion_models

    with torch.device("meta"):
        return diffusion_models(SD15_ARCHITECTURE)


def unet_flops(num_branches: int, size_px: int) -> int:
    """One sampler step of one candidate: the UNet with reference attention over every guidance branch."""
    from cafe_model.decoupled_attention import add_decoupled_cross_attention
    from cafe_model.presets import PRESETS, SD15_ARCHITECTURE
    from cafe_model.projector import build_projector
    from cafe_vision.clip_tokenizer import MAX_LENGTH_TOKENS

    spec, projector_spec = SD15_ARCHITECTURE, PRESETS["sd15"].projector
    unet, _, _ = sd15_models()
    latent_px = size_px // 8
    with torch.device("meta"):
        # CLIP ViT-L/14's image_embeds (768) -> 4 tokens, as the sd15 preset's customization model.
        projector = build_projector(
            projector_spec, feature_dim=spec.cross_attention_dim, cross_attention_dim=spec.cross_attention_dim
        )
        add_decoupled_cross_attention(unet, projector, num_tokens=projector_spec.num_tokens)
        latents = torch.empty(num_branches, 4, latent_px, latent_px)
        text = torch.empty(num_branches, MAX_LENGTH_TOKENS, spec.cross_attention_dim)
        reference = torch.empty(num_branches, 1, spec.cross_attention_dim)
        timestep = torch.tensor(500)
        return count_flops(
            lambda: unet(latents, timestep, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [reference]})
        )


def vae_decoder_flops(size_px: int) -> int:
    _, vae, _ = sd15_models()
    with torch.device("meta"):
        latents = torch.empty(1, 4, size_px // 8, size_px // 8)
        return count_flops(lambda: vae.decode(latents))


def text_encoder_flops() -> int:
    from cafe_vision.clip_tokenizer import MAX_LENGTH_TOKENS

    _, _, encoder = sd15_models()
    with torch.device("meta"):
        # SD pads every prompt to the full 77 tokens.
        prompt_ids = torch.zeros(1, MAX_LENGTH_TOKENS, dtype=torch.long)
        return count_flops(lambda: encoder(prompt_ids))


def reference_encoder_flops() -> int:
    from cafe_model.presets import CLIP_VIT_L14_ARCHITECTURE
    from cafe_model.random_reference_encoder import reference_encoder_model

    spec = CLIP_VIT_L14_ARCHITECTURE
    with torch.device("meta"):
        encoder = reference_encoder_model(spec)
        pixels = torch.empty(1, 3, spec.image_size_px, spec.image_size_px)
        return count_flops(lambda: encoder(pixel_values=pixels))


def generation_parts(recipe: Recipe) -> list[Part]:
    per_pair = 1.0 / recipe.candidates_per_pair
    # The prompt, and the negative prompt when an unconditional branch runs (pipeline.py encodes each once).
    num_prompts = 2 if recipe.num_branches > 1 else 1
    return [
        # Counted at batch num_branches: one step of one candidate (FLOPs are linear in the batch).
        Part(
            "generation",
            f"unet+reference attention x{recipe.num_branches} branches",
            unet_flops(recipe.num_branches, recipe.size_px),
            recipe.num_steps,
        ),
        Part("generation", f"vae decoder {recipe.size_px} px", vae_decoder_flops(recipe.size_px), 1.0),
        Part("generation", "clip text encoder 77 tokens", text_encoder_flops(), num_prompts * per_pair),
        Part("generation", "reference encoder vit-l/14 224 px", reference_encoder_flops(), per_pair),
    ]


# ---- scoring --------------------------------------------------------------------------------------


def grounder_flops(image_size_px: int) -> int:
    """Grounding DINO tiny on one square image, run for real on the CPU (its forward cannot run on meta)."""
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    # Random init on the CPU: the values never change the count (the data-dependent parts depend
    # on the prompt's ids and the pixel mask only).
    model = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
    prompt_ids = torch.tensor([GROUNDER_PROMPT_IDS])
    inputs = {
        "pixel_values": torch.zeros(1, 3, image_size_px, image_size_px),
        # The 512 px candidate fills the square (fit_inside scales it up), so no padding.
        "pixel_mask": torch.ones(1, image_size_px, image_size_px, dtype=torch.long),
        "input_ids": prompt_ids,
        "attention_mask": torch.ones_like(prompt_ids),
        "token_type_ids": torch.zeros_like(prompt_ids),
    }
    with torch.inference_mode():
        return count_flops(lambda: model(**inputs))


def sam_flops() -> tuple[int, int]:
    """(image encoder, prompt encoder + mask decoder for one box) of SAM ViT-B at its 1024 px input."""
    from cafe_vision.sam_decode import decode_boxes
    from cafe_vision.sam_model import SAM_VIT_B, build_sam

    side = SAM_VIT_B.image_size_px
    with torch.device("meta"):
        # cafe's builder: the modules sam_model_registry["vit_b"] builds, which the segmenter loads.
        sam = build_sam(SAM_VIT_B)
        pixels = torch.empty(1, 3, side, side)
        embeddings: list[torch.Tensor] = []
        encoder = count_flops(lambda: embeddings.append(sam.image_encoder(pixels)))
        owners, boxes = torch.zeros(1, dtype=torch.long), torch.empty(1, 4)
        decoder = count_flops(lambda: decode_boxes(sam, embeddings[0], owners, boxes))
    return encoder, decoder


def clip_flops() -> tuple[int, int]:
    """(one image, one prompt) of CLIP ViT-B/32 (CLIPConfig's defaults are openai/clip-vit-base-patch32's)."""
    from transformers import CLIPConfig, CLIPModel

    with torch.device("meta"):
        model = CLIPModel(CLIPConfig()).eval()
        pixels = torch.empty(1, 3, SCORER_IMAGE_PX, SCORER_IMAGE_PX)
        # No attention mask: one unpadded prompt, and the mask's padding check reads values (.item()).
        prompt_ids = torch.zeros(1, CLIP_PROMPT_TOKENS, dtype=torch.long)
        image = count_flops(lambda: model.get_image_features(pixel_values=pixels))
        text = count_flops(lambda: model.get_text_features(input_ids=prompt_ids))
    return image, text


def dino_flops() -> int:
    """One image through DINO ViT-S/16 (facebook/dino-vits16's sizes; no pooler, as DinoEmbedder loads it)."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        patch_size=16,
        image_size=SCORER_IMAGE_PX,
    )
    with torch.device("meta"):
        model = ViTModel(config, add_pooling_layer=False).eval()
        pixels = torch.empty(1, 3, SCORER_IMAGE_PX, SCORER_IMAGE_PX)
        return count_flops(lambda: model(pixel_values=pixels))


def scoring_parts(recipe: Recipe) -> list[Part]:
    per_pair = 1.0 / recipe.candidates_per_pair
    side = recipe.grounder_image_size_px
    sam_encoder, sam_decoder = sam_flops()
    clip_image, clip_text = clip_flops()
    dino = dino_flops()
    return [
        Part("scoring", f"grounding dino tiny {side} px", grounder_flops(side), 1.0),
        Part("scoring", "sam vit-b image encoder 1024 px", sam_encoder, 1.0),
        Part("scoring", "sam prompt encoder + mask decoder", sam_decoder, 1.0),
        # The candidate, and the pair's reference in the same call.
        Part("scoring", "clip vit-b/32 images 224 px", clip_image, 1.0 + per_pair),
        Part("scoring", f"clip vit-b/32 prompt {CLIP_PROMPT_TOKENS} tokens", clip_text, per_pair),
        # The subject cut-out, and the pair's reference view.
        Part("scoring", "dino vit-s/16 224 px", dino, 1.0 + per_pair),
    ]


# ---- report ---------------------------------------------------------------------------------------


def side_total(parts: Sequence[Part], side: Side) -> float:
    return sum(part.flops_per_candidate for part in parts if part.side == side)


def print_parts(parts: Sequence[Part]) -> None:
    for side in ("generation", "scoring"):
        total = side_total(parts, side)
        print(f"{side}: {total / GFLOP:10.1f} GFLOPs per candidate")
        for part in (part for part in parts if part.side == side):
            print(
                f"  {part.name:<40} {part.flops_per_call / GFLOP:9.2f} GFLOPs x {part.calls_per_candidate:6.2f}"
                f" = {part.flops_per_candidate / GFLOP:10.2f} per candidate ({part.flops_per_candidate / total:6.1%})"
            )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # Counting needs no speed; one thread keeps the CPU forward from disturbing (or being slowed
    # many times over by) other work on a shared machine.
    torch.set_num_threads(1)
    started = time.perf_counter()
    recipe = base_recipe(args)
    parts = generation_parts(recipe) + scoring_parts(recipe)
    wall_s = time.perf_counter() - started

    print(
        f"one candidate: SD 1.5 at {recipe.size_px} px, {recipe.num_steps} steps x {recipe.num_branches} guidance "
        f"branches, {recipe.candidates_per_pair} candidates per pair; scorers base (counted in {wall_s:.0f} s)"
    )
    print_parts(parts)
    scoring = [part for part in parts if part.side == "scoring"]
    largest = max(scoring, key=lambda part: part.flops_per_candidate)
    scoring_total, generation_total = side_total(parts, "scoring"), side_total(parts, "generation")
    print(f"largest scoring part: {largest.name}")
    print("FLOPs only (matmul, conv, attention): not time; see the module docstring for what is left out")
    print()
    print(f"improve_flops_largest_scoring_part_share_base {largest.flops_per_candidate / scoring_total:.3f}")
    print(f"improve_flops_score_vs_generation_base {scoring_total / generation_total:.3f}")


if __name__ == "__main__":
    main()

"""Self-improvement round benchmark: what a round spends beside generating, from the round's own stage timings.

Run from the repository root:

    .venv/bin/python bench/improve.py                     # tiny, 16 references x 4 prompts x 4 candidates, 30 steps
    .venv/bin/python bench/improve.py --quick             # 8 references, 10 steps: under a minute on 2 cores
    .venv/bin/python bench/improve.py --prompts 2 --candidates 8 --steps 50
    .venv/bin/python bench/improve.py --preset base       # real scorers (their weights must be in the HF cache)
    make bench                                            # every benchmark, this one with its defaults

What it measures: one round, `cafe_pipelines.improve_round.improve_round`, on a local Ray with num_cpus=2
started before the clock, from a closed set of deterministic triples (tests/factories.py's) and a `tiny`
checkpoint trained 2 steps here; the scorers are `--preset`'s, the sampler DDIM with `--steps` steps. The
round's shape is the real recipe's by default (ImproveConfig's 4 prompts x 4 candidates per reference, 30
steps), not the tiny recipe's 2 x 2 at 4 steps: the ratio is about a round's shape, 4 steps would make
generation unrealistically cheap next to scoring, and a reference's candidates are scored in one call,
whose fixed cost fewer candidates share. The round records per-stage busy seconds
(RoundReport.stage_s): `generate` and `score` are the stage actors' time inside their batches (model
loading excluded: actors load in `__init__`), `filter`, `dedupe` and `write` the driver's time per shard
(thresholds, hashes and cosines, building json and writing tars, status tables and candidate tables),
`read` reading the input sets and `report` drawing the histograms and the examples grid.

Human-readable lines come first; the ratio lines (`name value`) are the last thing printed:
- improve_score_vs_generation_alone: score / generate per candidate with the two stages run one after the
  other on `--serial-references` references after the round (`serial_seconds` says why this differs from
  the next)
- improve_score_vs_generation: score / generate
- improve_filter_dedupe_write_vs_generation: (filter + dedupe + write) / generate
- improve_fixed_vs_generation: (read + report) / generate, paid once per round, not per candidate
- improve_overhead_vs_generation: (score + filter + dedupe + write) / generate (target <= 0.10), last.
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cafe_core.local_ray import prepare_local_ray

if TYPE_CHECKING:  # imported where used: the module loads without torch
    from cafe_pipelines.improve_config import ImproveConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# tests/ is not a package: its factories build tiny triples, improve_helpers a tiny trained run.
sys.path[:0] = [str(REPO_ROOT / "tests"), str(REPO_ROOT / "tests" / "pipelines")]
OVERHEAD_TARGET = 0.10


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", help="scorer preset: tiny (random) or base (real weights)")
    parser.add_argument("--candidates", type=int, default=4, help="candidates per (reference, prompt) pair")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per reference")
    parser.add_argument("--references", type=int, default=16, help="references (input triples)")
    parser.add_argument("--steps", type=int, default=30, help="sampler steps")
    parser.add_argument(
        "--serial-references", type=int, default=4, help="references timed stage by stage after the round"
    )
    parser.add_argument("--quick", action="store_true", help="8 references, 10 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.references, args.steps = 8, 10
    return args


def write_inputs(root: Path, count: int) -> Path:
    """A closed round-0 set of `count` deterministic triples."""
    from factories import make_triple, ok_input

    from cafe_core import ShardSet

    with ShardSet(root).writer(mode="overwrite", fsync=False, max_samples=8) as writer:
        for index in range(count):
            triple = make_triple(index)
            writer.add(ok_input(triple), [triple])
    return root


def serial_seconds(config: ImproveConfig, references: int) -> tuple[float, float]:
    """(generate, score) seconds per candidate of the round's own stages run one after the other here.

    The round's actors share 2 cores: scoring, which waits for generated candidates, always runs
    beside a generating actor, while generating runs beside scoring only for the small share of
    its time that scoring takes. Run alone, one reference at a time in this process (one thread
    each, as the actors have; its pairs generated, then its candidates scored together, as the
    round does), the two stages' costs compare without that. The first reference warms both up
    and is not counted.
    """
    from factories import make_triple

    from cafe_pipelines.improve_round import round_checkpoint, stage_kwargs
    from cafe_pipelines.prompt_bank import pick_prompts
    from cafe_pipelines.stages.generate import GenerateStage
    from cafe_pipelines.stages.score import ScoreStage

    checkpoint, size_px = round_checkpoint(config)
    generate_kwargs, score_kwargs = stage_kwargs(config, checkpoint.path, size_px)
    generate, score = GenerateStage(**generate_kwargs), ScoreStage(**score_kwargs)
    seconds, count = {"generate": 0.0, "score": 0.0}, 0
    for index in range(references + 1):
        triple = make_triple(index)
        buffer = io.BytesIO()
        triple.reference.save(buffer, format="PNG")
        subject, caption = triple.metadata["subject"], triple.metadata["caption"]
        prompts = [
            prompt
            for _, prompt in pick_prompts(
                subject, caption, config.prompts_per_reference, seed=0, reference_key=triple.key
            )
        ]
        started = time.perf_counter()
        targets = [t for seed, prompt in enumerate(prompts) for t in generate.generate(buffer.getvalue(), prompt, seed)]
        generated = time.perf_counter()
        score.score_reference(buffer.getvalue(), targets, prompts, subject)
        if index:  # the first reference is the warm-up
            seconds["generate"] += generated - started
            seconds["score"] += time.perf_counter() - generated
            count += len(targets)
    return seconds["generate"] / count, seconds["score"] / count


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="cafe-bench-improve-"))
    try:
        prepare_local_ray()
        import ray
        from improve_helpers import train_tiny

        from cafe_pipelines.improve_config import improve_recipe
        from cafe_pipelines.improve_round import improve_round

        shards = write_inputs(scratch / "real", args.references)
        run = train_tiny(shards, scratch / "run")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        config = improve_recipe(
            args.preset,
            checkpoint=str(run),
            shards=[str(shards)],
            output=str(scratch / "round-1"),
            candidates_per_pair=args.candidates,
            prompts_per_reference=args.prompts,
            num_steps=args.steps,
            references_per_shard=4,
        )
        started = time.perf_counter()
        report = improve_round(config)
        wall_s = time.perf_counter() - started
        ray.shutdown()
        serial_generate_s, serial_score_s = serial_seconds(config, args.serial_references)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    s = report.stage_s
    print(
        f"one round: scorers {args.preset}, generator tiny at 64 px, {args.steps} DDIM steps; "
        f"{report.num_references} references x {args.prompts} prompts x {args.candidates} candidates = "
        f"{report.num_candidates} candidates in {report.shards_written} shards"
    )
    print(f"accepted {report.num_accepted} ({report.acceptance_rate:.1%}); reasons {report.reasons}")
    print(f"wall {wall_s:.1f} s (Ray actors starting and loading models included)")
    for name, seconds in s.items():
        per = seconds / report.num_candidates * 1000 if report.num_candidates else 0.0
        print(f"  {name:<9} {seconds:8.3f} s busy  {per:8.2f} ms per candidate")
    print(
        f"alone, {args.serial_references} references one after the other: generate {serial_generate_s * 1000:.2f}, "
        f"score {serial_score_s * 1000:.2f} ms per candidate"
    )
    generate = s["generate"] or float("nan")
    ratios = {
        "improve_score_vs_generation_alone": serial_score_s / serial_generate_s,
        "improve_score_vs_generation": s["score"] / generate,
        "improve_filter_dedupe_write_vs_generation": (s["filter"] + s["dedupe"] + s["write"]) / generate,
        "improve_fixed_vs_generation": (s["read"] + s["report"]) / generate,
        "improve_overhead_vs_generation": (s["score"] + s["filter"] + s["dedupe"] + s["write"]) / generate,
    }
    verdict = "meets" if ratios["improve_overhead_vs_generation"] <= OVERHEAD_TARGET else "misses"
    print(f"overhead {verdict} the target (<= {OVERHEAD_TARGET})")
    print()
    for name, value in ratios.items():
        print(f"{name} {value:.3f}")


if __name__ == "__main__":
    main()

"""`cafe toy`: the toy world end to end, the proof that the model learns to customize and that a round helps.

    report = run_toy(ToyConfig(output="runs/toy"))          # or: cafe toy --output runs/toy  (make toy)
    report["table"]     # rows: no reference, other reference, round 0, round 1 (identity, own, text)

What it does in OUTPUT, each step skipped when its output is already there (run it again to resume):

    data/          `cafe data toy`: training triples of the 116 training subjects, and the held-out set
                   (28 subjects no training triple shows, 6 test scenes)
    loop/          `cafe loop` with the toy preset and the toy scorers: round 0 trains on data/train
                   (`TOY_TRAIN`, `steps_per_round` steps); round r generates for references of the
                   training set, keeps what the toy scorers accept (`improve_recipe("toy")`: every
                   identity attribute and the scene exactly right, one object) and trains on from round
                   r-1's checkpoint with the accepted set mixed in
    eval/round-R.json   `cafe_pipelines.toy_eval.toy_evaluate` of round R's last checkpoint on the held-out
                   subjects; round 0 under every condition (its own reference, the null reference, another
                   subject's reference), later rounds with their own reference
    toy-report.json     the table below, chance, the settings, every round's acceptance and wall times
    toy-plot.png        the table as bars (identity and text per row, chance marked)
    toy-grid.png        one row per held-out subject: its reference, then one image per condition

The table's rows: "no reference" (round 0, null reference), "other reference" (round 0, another
subject's reference: `identity` against the reference given, `own` against the evaluated subject),
"round 0" and "round R" (their own reference). Identity and text are exact agreements read by the
toy classifier (see `cafe_pipelines.toy_eval`); chance is 0.21 and 0.25.

Round r trains (r + 1) x steps_per_round steps in all, so "round 1" has had more steps than "round 0":
`bench/toy.py` holds the step count equal (a round-0 run trained as long) to separate the two effects.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from cafe_loop.loop import run_loop, write_json
from cafe_loop.loop_config import LoopConfig
from cafe_pipelines.improve_config import ImproveConfig
from cafe_pipelines.toy_data import EVAL_DIR, REFERENCE_NAME, SUMMARY_NAME, TRAIN_DIR, ToyDataConfig, make_toy_data
from cafe_pipelines.toy_eval import CHANCE_IDENTITY, CHANCE_TEXT, CONDITIONS, ToyEvalResult, toy_evaluate
from cafe_train.config import TrainConfig

PRESET = "toy"
DATA_DIR = "data"
LOOP_DIR = "loop"
EVAL_RESULTS_DIR = "eval"
CONTROL_DIR = "control"
REPORT_NAME = "toy-report.json"
PLOT_NAME = "toy-plot.png"
GRID_NAME = "toy-grid.png"

# The toy preset's training recipe: the whole small UNet learns to draw, so a high rate with min-SNR
# weighting (Hang et al.), and the subject's latent cells weighed 5x (a small subject covers a tenth of
# the image; unweighted, the backgrounds' texture drowns its identity in the loss). No reference
# augmentation: the toy references already come from another rendering in another scene.
TOY_TRAIN: dict[str, Any] = {
    "batch_size": 32,
    "lr": 1e-3,
    "warmup_steps": 50,
    "num_workers": 1,
    "prompt_dropout": 0.1,
    "reference_dropout": 0.1,
    "augment_reference": False,
    "mask_loss_weight": 5.0,
    "min_snr_gamma": 5.0,
    "checkpoint_every": 250,
    "keep_checkpoints": 2,
    "log_every": 25,
}
# A round generates for this many training references (all 4640 would take an hour on 2 cores).
TOY_IMPROVE: dict[str, Any] = {"num_references": 64}

Progress = Callable[[str], None]


@dataclass
class ToyConfig:
    """One `cafe toy` run.

    output: the run folder (data/, loop/, eval/, the report and pictures).
    steps_per_round: training steps of each round. rounds: self-improvement rounds after round 0.
    seed: the data's, the training's and the rounds' seed (`bench/toy.py` runs several).
    num_subjects, images_per_subject: the training data (`cafe data toy`'s options).
    eval_subjects: the first N held-out subjects (None: all 28); eval_images_per_prompt, eval_steps,
        guidance: how each is drawn (DDIM steps; text and reference guidance alike).
    train, improve: TrainConfig and ImproveConfig fields over `TOY_TRAIN` and `TOY_IMPROVE`.
    model_cache_dir: where the toy base and the toy classifier are built once (default: the cafe model cache).
    """

    output: Path
    steps_per_round: int = 600
    rounds: int = 1
    seed: int = 0
    num_subjects: int | None = None
    images_per_subject: int = 40
    eval_subjects: int | None = None
    eval_images_per_prompt: int = 1
    eval_steps: int = 20
    guidance: float = 7.5
    train: dict[str, Any] = field(default_factory=dict)
    improve: dict[str, Any] = field(default_factory=dict)
    model_cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        for name, low in (("steps_per_round", 1), ("rounds", 0), ("eval_images_per_prompt", 1), ("eval_steps", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: {value!r} must be an integer >= {low}")
        if self.eval_subjects is not None and (not isinstance(self.eval_subjects, int) or self.eval_subjects < 2):
            raise ValueError(f"eval_subjects: {self.eval_subjects!r} must be an integer >= 2 (or unset for all)")
        if not self.guidance >= 1.0:
            raise ValueError(f"guidance: {self.guidance!r} must be >= 1 (1 = no classifier-free guidance)")
        self.data_config()  # the data options, checked before anything runs
        for name, known in (("train", TrainConfig), ("improve", ImproveConfig)):
            unknown = sorted(set(getattr(self, name)) - {f.name for f in fields(known)})
            if unknown:
                raise ValueError(f"{name}: unknown {known.__name__} field(s) {', '.join(unknown)}")

    def data_config(self) -> ToyDataConfig:
        return ToyDataConfig(
            output=str(self.output / DATA_DIR),
            num_subjects=self.num_subjects,
            images_per_subject=self.images_per_subject,
            seed=self.seed,
        )

    def loop_config(self) -> LoopConfig:
        """The loop of this run (its shards must exist: `LoopConfig` checks them)."""
        cache = {"model_cache_dir": self.model_cache_dir}
        train = {**TOY_TRAIN, "max_steps": self.steps_per_round, "seed": self.seed, **cache, **self.train}
        improve = {**TOY_IMPROVE, "seed": self.seed, **cache, **self.improve}
        shards = self.output / DATA_DIR / TRAIN_DIR
        return LoopConfig(
            output=self.output / LOOP_DIR,
            shards=[shards],
            preset=PRESET,
            rounds=self.rounds,
            min_acceptance_rate=0.0,
            train=train,
            improve=improve,
        )


def _data(config: ToyConfig, say: Progress) -> None:
    summary = config.output / DATA_DIR / SUMMARY_NAME
    wanted = {k: v for k, v in asdict(config.data_config()).items() if k != "output"}  # a moved run is the same
    if summary.is_file():
        settings = json.loads(summary.read_text())["settings"]
        changed = sorted(k for k in wanted if settings.get(k) != wanted[k])
        if changed:
            raise ValueError(
                f"{summary}: made with other data settings ({', '.join(changed)}); use another --output, or the"
                " settings it was made with"
            )
        say(f"data: {summary.parent} is there")
        return
    say("data: rendering the toy world")
    report = make_toy_data(config.data_config())
    say(f"data: {report.train_triples} triples, {report.eval_subjects} held-out subjects in {report.wall_s:.0f} s")


def evaluate_checkpoint(
    config: ToyConfig, name: str, checkpoint: str, conditions: tuple[str, ...], scorers: Any, say: Progress
) -> dict[str, Any]:
    """The held-out evaluation of `checkpoint` under `conditions`, cached in eval/NAME.json (keyed by the
    checkpoint and the settings), with one picture per subject and condition in eval/NAME/."""
    from cafe_model.trained import load_trained_pipeline

    path = config.output / EVAL_RESULTS_DIR / f"{name}.json"
    settings = {
        "checkpoint": _relative(Path(checkpoint), config.output),
        "conditions": list(conditions),
        "eval_subjects": config.eval_subjects,
        "images_per_prompt": config.eval_images_per_prompt,
        "num_steps": config.eval_steps,
        "guidance": config.guidance,
        "seed": config.seed,
    }
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("request") == settings:
            say(f"eval {name}: {path} is there")
            return saved
    say(f"eval {name}: drawing the held-out subjects ({', '.join(conditions)})")
    pipeline, _ = load_trained_pipeline(checkpoint, cache_dir=config.model_cache_dir)
    result: ToyEvalResult = toy_evaluate(
        pipeline,
        scorers,
        config.output / DATA_DIR / EVAL_DIR,
        images_per_prompt=config.eval_images_per_prompt,
        num_steps=config.eval_steps,
        text_guidance=config.guidance,
        reference_guidance=config.guidance,
        seed=config.seed,
        conditions=conditions,
        max_subjects=config.eval_subjects,
    )
    grid_dir = path.parent / name
    grid_dir.mkdir(parents=True, exist_ok=True)
    pictures: dict[str, dict[str, str]] = {}
    for condition, subject, images in result.samples:
        name = f"{subject}-{condition}.png"
        images[0].save(grid_dir / name)
        pictures.setdefault(subject, {})[condition] = str((grid_dir / name).relative_to(config.output))
    saved = {"request": settings, **result.to_dict(), "pictures": pictures}
    write_json(path, saved)
    return saved


def _relative(path: Path, root: Path) -> str:
    """`path` relative to `root` when inside it (so a moved run keeps its cached evaluations), else as given."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _table(evaluations: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    first = evaluations[0]["conditions"]
    rows = [
        {"row": "no reference", "round": 0, "condition": "no_reference", **_numbers(first["no_reference"])},
        {"row": "other reference", "round": 0, "condition": "other_reference", **_numbers(first["other_reference"])},
    ]
    for round_, evaluation in sorted(evaluations.items()):
        rows.append(
            {
                "row": f"round {round_}",
                "round": round_,
                "condition": "reference",
                **_numbers(evaluation["conditions"]["reference"]),
            }
        )
    return rows


def _numbers(means: dict[str, float]) -> dict[str, float]:
    names = ("identity", "own", "text", "shape", "colour", "pattern", "background", "position")
    return {name: round(float(means[name]), 4) for name in names}


def run_toy(config: ToyConfig, *, on_progress: Progress | None = None) -> dict[str, Any]:
    """Data, the loop, the evaluations and the report (see the module docstring); returns the report."""
    say = on_progress or (lambda _message: None)
    began = time.perf_counter()
    config.output.mkdir(parents=True, exist_ok=True)
    _data(config, say)
    data_s = time.perf_counter() - began
    loop_config = config.loop_config()
    loop_report = run_loop(loop_config, on_progress=say)
    loop_s = time.perf_counter() - began - data_s

    from cafe_vision.load_scorers import load_scorers

    scorers = load_scorers(loop_config.scorer_preset, cache_dir=config.model_cache_dir)
    evaluations = {
        record.round: evaluate_checkpoint(
            config,
            f"round-{record.round}",
            record.checkpoint,
            CONDITIONS if record.round == 0 else ("reference",),
            scorers,
            say,
        )
        for record in loop_report.rounds
        if record.checkpoint is not None
    }
    report = {
        "table": _table(evaluations),
        "chance": {"identity": CHANCE_IDENTITY, "text": CHANCE_TEXT},
        "rounds": [
            {
                "round": record.round,
                "checkpoint": record.checkpoint,
                "steps": record.last_step,
                "last_loss": record.last_loss,
                "num_candidates": record.num_candidates,
                "num_accepted": record.num_accepted,
                "acceptance_rate": record.acceptance_rate,
                "reasons": record.reasons,
            }
            for record in loop_report.rounds
        ],
        "stop_reason": loop_report.stop_reason,
        "settings": {**asdict(config), "output": str(config.output), "train_recipe": TOY_TRAIN},
        "wall_s": {
            "data": round(data_s, 1),
            "loop": round(loop_s, 1),
            "eval": round(time.perf_counter() - began - data_s - loop_s, 1),
            "total": round(time.perf_counter() - began, 1),
        },
    }
    draw_plot(report["table"], config.output / PLOT_NAME)
    draw_grid(evaluations, config.output, config.output / GRID_NAME)
    write_json(config.output / REPORT_NAME, report)
    return report


def train_control(config: ToyConfig, report: dict[str, Any], *, on_progress: Progress | None = None) -> dict | None:
    """Round 0's run trained on, on the real set alone, to the last round's step count (CONTROL_DIR/train),
    and its held-out eval with the reference (eval/control.json): a round's effect at equal steps.
    None when no round after 0 trained. Resumes like the loop (a finished control is not trained again)."""
    from cafe_loop.loop import seed_run
    from cafe_train.loop import train

    say = on_progress or (lambda _message: None)
    trained = [r for r in report["rounds"] if r["checkpoint"] is not None]
    if len(trained) < 2:
        return None
    steps = int(trained[-1]["steps"])
    run = config.output / CONTROL_DIR / "train"
    round_0 = config.loop_config().round_train_config(0, [config.output / DATA_DIR / TRAIN_DIR], None)
    checkpoint = run / "checkpoints" / f"step-{steps:06d}"
    if not checkpoint.is_dir():
        seed_run(run, Path(trained[0]["checkpoint"]))
        say(f"control: round 0 trained on to step {steps} on the real set alone")
        train(replace(round_0, max_steps=steps, output_dir=run))
    from cafe_vision.load_scorers import load_scorers

    scorers = load_scorers(PRESET, cache_dir=config.model_cache_dir)
    return evaluate_checkpoint(config, "control", str(checkpoint), ("reference",), scorers, say)["conditions"][
        "reference"
    ]


# ---- pictures (PIL: the lock has no plotting library, and two bar groups need none) -----------------

_BAR_COLOURS = {"identity": (52, 101, 164), "text": (245, 121, 0)}


def draw_plot(table: list[dict[str, Any]], path: Path) -> None:
    """Bars of identity and text per table row, on a 0-1 axis, with the chance levels dashed."""
    row_w, bar_w, height, left, top, bottom = 120, 40, 260, 40, 30, 60
    width = left + row_w * len(table) + 20
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_h = height - top - bottom

    def y_of(value: float) -> float:
        return top + plot_h * (1.0 - value)

    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        draw.line([(left, y_of(tick)), (width - 10, y_of(tick))], fill=(225, 225, 225))
        draw.text((4, y_of(tick) - 6), f"{tick:.2f}", fill="black")
    for name, chance in (("identity", CHANCE_IDENTITY), ("text", CHANCE_TEXT)):
        y = y_of(chance)
        for x in range(left, width - 10, 8):
            draw.line([(x, y), (x + 4, y)], fill=_BAR_COLOURS[name])
    for index, row in enumerate(table):
        x0 = left + index * row_w + 15
        for offset, name in enumerate(("identity", "text")):
            x = x0 + offset * (bar_w + 5)
            draw.rectangle([(x, y_of(row[name])), (x + bar_w, y_of(0.0))], fill=_BAR_COLOURS[name])
            draw.text((x + 4, y_of(row[name]) - 12), f"{row[name]:.2f}", fill="black")
        draw.text((x0, height - bottom + 8), row["row"], fill="black")
    draw.text((left, height - 22), "identity (blue), text (orange); dashed: chance", fill="black")
    image.save(path)


def draw_grid(evaluations: dict[int, dict[str, Any]], root: Path, path: Path, *, scale: int = 3) -> None:
    """One row per held-out subject: its reference, then the images of round 0's conditions and later rounds."""
    columns = [(0, "no_reference"), (0, "other_reference"), *((r, "reference") for r in sorted(evaluations))]
    first = evaluations[0]
    subjects = list(first["pictures"])
    eval_root = root / DATA_DIR / EVAL_DIR
    side = 32 * scale
    grid = Image.new("RGB", (side * (len(columns) + 1), side * len(subjects)), "white")
    for row, subject in enumerate(subjects):
        with Image.open(eval_root / subject / REFERENCE_NAME) as reference:
            cell = Image.new("RGB", reference.size, "white")
            cell.paste(reference, mask=reference.convert("RGBA").getchannel("A"))
        grid.paste(cell.resize((side, side), Image.Resampling.NEAREST), (0, row * side))
        for column, (round_, condition) in enumerate(columns, start=1):
            relative = evaluations[round_]["pictures"].get(subject, {}).get(condition)
            if relative is None:
                continue
            with Image.open(root / relative) as image:
                cell = image.convert("RGB").resize((side, side), Image.Resampling.NEAREST)
            grid.paste(cell, (column * side, row * side))
    grid.save(path)

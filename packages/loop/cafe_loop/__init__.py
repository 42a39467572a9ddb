"""cafe_loop: the self-improvement loop, train ⇄ improve for N rounds (composes cafe_train and cafe_pipelines).

from cafe_loop import load_loop_config, run_loop
report = run_loop(load_loop_config("loop.yaml", sets=["rounds=2"]))
"""

from cafe_loop.loop import LoopReport, RoundRecord, run_loop
from cafe_loop.loop_config import LoopConfig, load_loop_config

__all__ = ["LoopConfig", "LoopReport", "RoundRecord", "load_loop_config", "run_loop"]

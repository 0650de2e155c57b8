"""Evaluation with each benchmark's exact protocol: ``algnet score`` and ``algnet eval``.

- :mod:`.protocols`: reading images and scoring a pair, per protocol (gopro, hide, realblur, dpdd, dpdd16).
- :mod:`.pairing`: ground truth in a dataset layout or a flat folder; predictions matched to it.
- :mod:`.scoring`: per-image rows, summaries, JSON/CSV/table output.
- :mod:`.runner`: running a checkpoint over a test set (``algnet eval``).
- :mod:`.figures`: blurred | restored | sharp comparison figures.
"""

from .figures import comparison_figure, largest_error_box, select_names
from .pairing import ScoreItem, ground_truth_items, match_predictions
from .protocols import PROTOCOLS, score_pair
from .runner import EvalConfig, evaluate, load_eval_config
from .scoring import ScoreResult, format_table, score_folders, summarize, write_csv, write_json

__all__ = [
    "PROTOCOLS", "ScoreItem", "ScoreResult", "EvalConfig", "score_folders", "score_pair", "summarize", "evaluate",
    "load_eval_config", "ground_truth_items", "match_predictions", "write_json", "write_csv", "format_table",
    "comparison_figure", "largest_error_box", "select_names",
]

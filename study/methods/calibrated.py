"""What the data-dependent methods share: their calibration parameters and the statistics pass's results.

regmean and fisher each ask for one statistic of every checkpoint on the text their ``calibration`` and
``sequences`` parameters name; aim asks for the base's. The driver computes the statistics before the first
tensor (``study.statistics``) and hands them over in ``context["statistics"]``, so a method called without
them was called by something other than the driver: a programming error, not a user's.
"""

from __future__ import annotations

from typing import Any

from study.statistics.spec import StatisticKind, StatisticRequest, parse_calibration

CALIBRATION_RANGES: dict[str, dict[str, Any]] = {
    "calibration": {"help": "text each checkpoint is run on: zoo (the mini zoo's training mixture), "
                            "lm_eval:<task>[:train|:validation] (never the evaluated split) or a UTF-8 text file's "
                            "path (one sequence per non-empty line; cached by content)"},
    "sequences": {"low": 1, "help": "how many calibration sequences (of at most 512 tokens) each checkpoint is run on"},
}
"""The ``calibration`` and ``sequences`` parameters of a method that asks for a statistic of every checkpoint."""


def checkpoint_statistic(params: dict[str, Any], statistic: StatisticKind, method: str) -> list[StatisticRequest]:
    """``statistic`` of every checkpoint on the calibration text of ``params`` (a method's ``statistics=``)."""
    calibration = parse_calibration(str(params.get("calibration", "zoo")), sequences=int(params.get("sequences", 64)),
                                    method=method)
    return [StatisticRequest(statistic=statistic, of="checkpoints", calibration=calibration)]


def pass_statistics(context: dict[str, Any] | None, method: str, what: str, tensor_name: str | None) -> Any:
    """The statistics pass's results from the driver's ``context`` (``study.statistics.Statistics``)."""
    statistics = (context or {}).get("statistics")
    if statistics is None:
        raise RuntimeError(f"{method} needs the statistics pass's {what} (tensor {tensor_name})")
    return statistics

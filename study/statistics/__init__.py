"""Data-dependent statistics for merge methods (RegMean's Gram matrices, Fisher diagonals, AIM's activations):
declared by a method, computed once per checkpoint and calibration set, cached on disk, read per tensor."""

from study.statistics.cache import COMPUTED, Statistics, gather, statistics_dir
from study.statistics.spec import CalibrationSpec, StatisticRequest, parse_calibration

__all__ = ["COMPUTED", "CalibrationSpec", "StatisticRequest", "Statistics", "gather", "parse_calibration",
           "statistics_dir"]

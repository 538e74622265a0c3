"""DSO side: the private key map, operating points and the sensitivity package, the AC
check of a clearing, and the round policy of one frame.

- :mod:`flexcore.dso.keymap`: :class:`KeyMap` (``KEYMAP.json``), :class:`KeyMapError`;
- :mod:`flexcore.dso.linearizer`: :class:`Linearizer`, :class:`OperatingPoint`,
  :class:`LinearizationReport`, :class:`PointNotConverged`;
- :mod:`flexcore.dso.validation`: :class:`ValidationReport`;
- :mod:`flexcore.dso.refinement`: :class:`RefinementSession`, :class:`RefinementPolicy`,
  :class:`Verdict`, :class:`RelinearizationSchedule`.
"""
from __future__ import annotations

from flexcore.dso.keymap import KEYMAP_FORMAT, KeyMap, KeyMapError
from flexcore.dso.linearizer import (
                                     LinearizationReport,
                                     Linearizer,
                                     OperatingPoint,
                                     PointNotConverged,
                                     RowPositions,
)
from flexcore.dso.refinement import (
                                     RefinementPolicy,
                                     RefinementSession,
                                     RelinearizationSchedule,
                                     RoundRecord,
                                     ScheduleDecision,
                                     Verdict,
)
from flexcore.dso.validation import ValidationReport

__all__ = ["KEYMAP_FORMAT", "KeyMap", "KeyMapError", "LinearizationReport", "Linearizer",
           "OperatingPoint", "PointNotConverged", "RefinementPolicy", "RefinementSession",
           "RelinearizationSchedule", "RoundRecord", "RowPositions", "ScheduleDecision",
           "ValidationReport", "Verdict"]

"""The one error base of flexcosim and its named subclasses.

Every error that bad input can cause is a :class:`FlexcosimError`; its message names the
culprit (file, line, key or element). The command line turns exactly these into one line on
stderr and exit code 2; anything else is a bug and exits 3 with its traceback
(``scenarios/cli.py``, README "Exit codes"). Programming errors stay plain exceptions.

Each subclass lives next to the code that raises it (this module is the lowest layer and
imports nothing of the project):

=======================  =============================================================
class                    raised for
=======================  =============================================================
``InputFileError``       an input file or folder that does not exist (defined here)
``RunFolderError``       an output folder that exists and is not empty (``flexcore.runs``)
``BidError``             a malformed ``BIDS.csv`` or bid table (``flexcore.exchange.bids``)
``PackageError``         a malformed or tampered sensitivity package
``ClearingError``        bad input to the clearing (bids not matching the package, ...)
``ClearingFileError``    a malformed or tampered ``CLEARING.json``
``LimitsError``          limits that cannot be used (``flexcore.exchange.limits``)
``GridError``            a grid source that cannot be loaded or built (``flexcore.grid``)
``PointNotConverged``    an AC power flow at an operating point that does not converge
``BuildingTableError``   a malformed building or street table (``flexcore.district``)
``WeatherError``         a TRY weather file or year that cannot be used
``ClockError``           a time that is not on the frame clock
``KeyMapError``          a malformed ``KEYMAP.json`` or one that does not fit the grid
``MessageError``         a malformed message between the DSO and TSO agents
``RegistryError``        an ``[[fpu]]`` entry or unit class that cannot be used
``ConfigError``          a malformed scenario TOML (``scenarios/config.py``; not re-exported:
                         flexcore never imports scenarios)
=======================  =============================================================

The subclasses also derive from the built-in they replaced (``ValueError``,
``FileNotFoundError``, ...), so existing ``except ValueError`` code keeps working.
"""
from __future__ import annotations


class FlexcosimError(Exception):
    """Bad input or an unusable state, with a message that names the culprit (exit 2)."""


class InputFileError(FlexcosimError, FileNotFoundError):
    """An input file or folder that does not exist (the message names the path)."""


"""The one error base of flexcosim and its named subclasses.

Every error that bad input can cause is a :class:`FlexcosimError`; its message names the
culprit (file, line, key or element). The command line turns exactly these into one line on
stderr and exit code 2; anything else is a bug and exits 3 with its traceback
(``scenarios/cli.py``). Each subclass lives next to the code that raises it and is
re-exported here, so that ``from flexcore.errors import ...`` finds all of them:

=======================  =============================================================
class                    raised for
=======================  =============================================================
``BidError``             a malformed ``BIDS.csv`` or bid table (``flexcore.exchange.bids``)
``PackageError``         a malformed or tampered sensitivity package
``ClearingError``        bad input to the clearing (bids not matching the package, ...)
``ClearingFileError``    a malformed or tampered ``CLEARING.json``
``KeyMapError``          a malformed ``KEYMAP.json`` or one that does not fit the grid
``GridError``            a grid source that cannot be loaded or used
``PointNotConverged``    an AC power flow at an operating point that does not converge
``BuildingTableError``   a malformed building or street table
``RegistryError``        an ``[[fpu]]`` entry or unit class that cannot be used
``ConfigError``          a malformed scenario TOML (``scenarios/config.py``)
=======================  =============================================================

The subclasses also derive from :class:`ValueError` where they did before, so existing
``except ValueError`` code keeps working.
"""
from __future__ import annotations


class FlexcosimError(Exception):
    """Bad input or an unusable state, with a message that names the culprit (exit 2)."""


class InputFileError(FlexcosimError, FileNotFoundError):
    """An input file or folder that does not exist, or an output that would overwrite one."""

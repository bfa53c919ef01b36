"""Lineage: who is told each time ``artifact()`` hands out a path.

Callbacks ``f(name, tree_hash, path)``; the artifacts lookup calls them, the runs package
registers one to record a run's inputs.  The list lives here, below both, so neither
package imports the other for it.  Empty by default, so a lookup pays nothing for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the lookup path imports this module
    from collections.abc import Callable
    from pathlib import Path

observers: list[Callable[[str, str, Path], None]] = []

"""The kinds of refs (``refs/<kind>/<name>.json``), one name for each, so every feature
that sets or reads refs of a kind says it the same way.  What each kind means:
``schema/README.md`` (Terminology) and ``schema/refs.md``.
"""

from __future__ import annotations

#: a name a user gave a tree (``runicorn pin``, ``snapshot --pin``)
PIN = "pin"
#: a tree of an experiment run: ``<run_id>/code``, ``<run_id>/files``, ``<run_id>/output/<name>/<n>``
RUN = "run"
#: a tree pushed or pulled as an artifact (named by its tree id)
ARTIFACT = "artifact"
#: a ``Runicorn.toml`` entry's tree, kept while the file binds it
BINDING = "binding"
#: what ``restore --overwrite`` replaced in a checkout
RESTORE_BACKUP = "restore-backup"

__all__ = ["ARTIFACT", "BINDING", "PIN", "RESTORE_BACKUP", "RUN"]

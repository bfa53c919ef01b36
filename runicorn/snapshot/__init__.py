"""The snapshot engine: a workspace captured into the store as a tree.

:mod:`~runicorn.snapshot.workspace` (``snapshot_workspace``) drives
:mod:`~runicorn.snapshot.ignore` (ignore rules and their cache),
:mod:`~runicorn.snapshot.scan` (the workspace scan), :mod:`~runicorn.snapshot.statcache`
(the stat cache) and :mod:`~runicorn.snapshot.capture` (capture into the store).
"""

"""The restore engine: stored trees back onto the filesystem.

:mod:`~runicorn.restore.engine` (``restore_from_manifest``) writes a tree through a
staging directory (:mod:`~runicorn.restore.staging`), into an empty target or, by
:mod:`~runicorn.restore.checkout`, into an existing one; :mod:`~runicorn.restore.export`
writes a tree as a zip or hands out one file; :mod:`~runicorn.restore.source` reads the
manifest and locates blobs.
"""

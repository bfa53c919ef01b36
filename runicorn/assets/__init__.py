"""The seed's assets API, as thin facades over the engines that do the work.

``fingerprint.sha256_file`` (:mod:`runicorn.hashing`), ``blob_store`` (the store's blobs,
or a bare blob folder), ``restore`` (:mod:`runicorn.restore`) and ``cleanup`` (the store's
gc and :mod:`runicorn.runs.delete`).  ``runicorn.snapshot_workspace`` is
:mod:`runicorn.snapshot`.
"""

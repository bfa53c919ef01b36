"""Team remotes: push and pull trees, refs, runs and artifacts to object storage.

A remote is an S3-compatible bucket (``s3://BUCKET/PREFIX``), a shared directory
(``file:///PATH`` or a plain path) or an SFTP directory (``sftp://[USER@]HOST[:PORT]/PATH``),
laid out as ``schema/remote.md`` describes.  One module per concern:

* :mod:`~runicorn.remotes.config`  the registry of named remotes (store and project files)
* :mod:`~runicorn.remotes.backend` the object protocol and its file / sftp / s3 backends
* :mod:`~runicorn.remotes.layout`  object keys, ``config.json``, remote ref records
* :mod:`~runicorn.remotes.locks`   shared (push) and exclusive (gc) lock objects
* :mod:`~runicorn.remotes.push` / :mod:`~runicorn.remotes.pull`  moving content
* :mod:`~runicorn.remotes.maintenance`  remote gc and verify

Nothing here is imported by ``import runicorn``; obstore and paramiko load only when a
remote of their kind is opened.
"""

"""Run sync: copying the runs a server publishes into the local storage root.

* :mod:`runicorn.sync.manifest` and :mod:`runicorn.sync.manifest_schema`: the sync manifest
  (a server's listing of experiment files, ``schema/sync-manifest.md``; unrelated to the tree
  manifests of the store, see the Terminology section of ``schema/README.md``).
* :mod:`runicorn.sync.server`: writes the sync manifest on the server.
* :mod:`runicorn.sync.client`: downloads runs over SFTP, from the sync manifest or by walking
  the server's directories.

Nothing here is imported by ``import runicorn``; paramiko is imported only when a sync runs.
"""

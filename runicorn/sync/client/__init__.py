"""The client side of run sync: download a server's runs over SFTP into a local directory.

:mod:`.service` picks the method (the sync manifest via :mod:`.manifest_client`, else the
directory walk of :mod:`.walk_client`); :mod:`.local_cache` says where runs land;
:mod:`.transfer` holds the SFTP transfer primitives both methods share.
"""

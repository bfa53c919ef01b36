"""The client side of run sync: download a server's runs over SFTP into a local directory.

:mod:`.service` picks the method (the sync manifest via :mod:`.manifest_client`, else the
directory walk of :mod:`.walk_client`).  Both share the same parts:

* :mod:`.local_cache`: where server paths land locally (and the bookkeeping area);
* :mod:`.sftp_io`: counted SFTP operations and range reads;
* :mod:`.downloader`: atomic, group-committed downloads and appends;
* :mod:`.pipelined_fetch`: many small files over one channel, requests in flight together;
* :mod:`.written_ledger`: what sync wrote, so it replaces or removes only its own files;
* :mod:`.budget`: how far files grown since the manifest may exceed the plan;
* :mod:`.report`: the statistics every sync returns and its errors.
"""

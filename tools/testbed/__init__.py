"""The real parts tests and benchmarks run against, in one place both import.

* :mod:`.sshd`: a throwaway OpenSSH ``sshd`` on 127.0.0.1 (SFTP);
* :mod:`.seaweed`: a throwaway SeaweedFS on 127.0.0.1 (S3);
* :mod:`.run_trees`: run directories as a run-sync server holds them, and a mirror check.

They live under ``tools/`` rather than ``tests/`` because benchmarks (``tools/bench``) use them
as much as tests do and a benchmark must not depend on the test suite, and outside
``runicorn/`` because the package must not ship test servers.  Import them from the
repository root (pytest puts it on ``sys.path``; the benchmark scripts insert it).  The
pytest fixtures that start them stay in ``tests/conftest.py``.
"""

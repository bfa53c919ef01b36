"""Experiment runs: ``runicorn.init(...)`` and the :class:`Run` it returns.

A run lives in ``<storage_root>/<path>/runs/<run_id>/``:

* ``meta.json``   who/what/where (written once, updated when code or archives are linked)
* ``status.json`` ``running`` -> ``finished`` / ``failed`` / ...
* ``events.jsonl`` one JSON record per :meth:`Run.log`
* ``summary.json`` the merged :meth:`Run.summary` values
* ``logs.txt``    a human-readable line per lifecycle event and :meth:`Run.log_text`

Content the run keeps (its code snapshot, archived files) lives in the store as trees,
named by refs of kind ``run``: ``<run_id>/code`` and ``<run_id>/archive/<role>/<n>``.
Artifacts obtained with ``runicorn.artifact()`` while the run is active are its inputs
(lineage): listed in ``meta.json`` under ``inputs`` and kept by ``<run_id>/input/<name>``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat as stat_mod
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from runicorn.errors import RunicornError
from runicorn.fsutil import atomic_write_json
from runicorn.relpath import validate_relpath
from runicorn.runs.index import RESERVED_TOP, find_run_dir, upsert_run, valid_run_id
from runicorn.runs.ids import RUN_ID_MAX_LEN
from runicorn.runs.refs import REF_KIND, ref_naming

_active: list["Run"] = []
_active_lock = threading.Lock()


class NotSerialisableError(RunicornError, TypeError):
    """A value given to :meth:`Run.log` or :meth:`Run.summary` cannot be written as JSON."""


def new_run_id() -> str:
    """``YYYYmmdd_HHMMSS_<6 hex>`` in UTC."""
    return time.strftime("%Y%m%d_%H%M%S", time.gmtime()) + "_" + os.urandom(3).hex()


def _run_path(path: str | None, project: str | None, name: str | None) -> str:
    if path is None:
        if project is None and name is None:
            path = "default"
        else:
            path = "/".join(p for p in (project or "default", name) if p)
    path = str(path).rstrip("/")
    try:
        validate_relpath(path, what="run path")
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    parts = path.split("/")
    if parts[0] in RESERVED_TOP or "runs" in parts:
        raise ValueError(f"run path {path!r} may not start with {sorted(RESERVED_TOP)} or contain 'runs'")
    return path


def current_run() -> "Run | None":
    """The most recently started run of this process that is still active."""
    with _active_lock:
        return _active[-1] if _active else None


class Run:
    """One experiment run.  Create with :func:`init`; use as a context manager.

    Leaving the ``with`` block finishes the run, as ``failed`` if an exception escaped.
    """

    def __init__(self, store: Any, run_id: str, path: str, run_dir: Path, meta: dict[str, Any]) -> None:
        self.store = store
        self.run_id = run_id
        self.path = path
        self.run_dir = run_dir
        self.meta = meta
        self.status = "running"
        self._step = 0
        self._inputs_seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._summary: dict[str, Any] = {}
        self._last_metrics: dict[str, Any] = {}  # latest value of each metric given to log()

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, path={self.path!r}, status={self.status!r})"

    # ------------------------------------------------------------------ logging
    def _append(self, name: str, text: str) -> None:
        # One write() of a whole line on an O_APPEND descriptor: concurrent writers never interleave mid-line.
        fd = os.open(self.run_dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)

    def log_text(self, line: str) -> None:
        """Append a line to ``logs.txt``."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._append("logs.txt", f"{stamp} {line.rstrip()}\n")

    def log(self, data: Mapping[str, Any], step: int | None = None) -> None:
        """Record metrics as one line of ``events.jsonl`` (``step`` counts up when omitted).

        Raises:
            TypeError: ``data`` is not a mapping or not JSON-serialisable.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"run.log expects a dict, got {type(data).__name__}")
        with self._lock:
            if step is None:
                step = self._step
            self._step = int(step) + 1
            record = {"step": step, "time": time.time(), **data}
            line = json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"
            self._append("events.jsonl", line)
            self._last_metrics.update(data)

    def summary(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``data`` into ``summary.json`` (atomically); return the whole summary.

        Values are serialised as in :meth:`log` (numpy/torch scalars via ``.item()``).  A
        value that cannot be serialised leaves the summary unchanged.

        Raises:
            TypeError: ``data`` is not a mapping or holds a value that is not JSON-serialisable.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"run.summary expects a dict, got {type(data).__name__}")
        with self._lock:
            merged = {**self._summary, **data}
            # Round-trip through JSON so the kept summary holds exactly what was written.
            try:
                plain = json.loads(json.dumps(merged, ensure_ascii=False, default=_json_default))
            except ValueError as exc:  # e.g. a circular reference
                raise NotSerialisableError(f"run.summary: values are not JSON serialisable ({exc})") from None
            atomic_write_json(self.run_dir / "summary.json", plain)
            self._summary = plain
            return dict(plain)

    # ------------------------------------------------------------------ content
    def _ingest_path(self, src: Path) -> str:
        """Store file, symlink or directory ``src`` as a tree (a file becomes a one-file tree).

        Raises:
            FileNotFoundError: ``src`` does not exist.
            RunicornError: ``src`` is not a regular file, directory or symlink.
        """
        from runicorn.store.tree_format import MODE_LINK, TreeEntry, mode_of

        st = os.lstat(src)  # raises FileNotFoundError naming the path
        if stat_mod.S_ISDIR(st.st_mode):
            return self.store.ingest_directory(src, source=str(src.absolute()))
        mode = mode_of(st.st_mode)
        if mode == MODE_LINK:
            info = self.store.ingest_bytes(os.fsencode(os.readlink(src)))
        elif stat_mod.S_ISREG(st.st_mode):
            info = self.store.ingest_file(src)
        else:
            raise RunicornError(f"{src}: not a regular file, directory or symlink")
        return self.store.put_tree({src.name: TreeEntry(info.sha256, mode, info.size)}, source=str(src.absolute()))

    def save_output(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        keep_last: int | None = None,
        keep_best: tuple[str, str] | None = None,
        metric_value: float | None = None,
    ) -> dict[str, Any]:
        """Store ``path`` as the next version of rolling output ``name``; return the version record.

        ``name`` defaults to the file or directory name without its suffix.  Each version is
        ref ``run/<run_id>/output/<name>/<version>``.  With ``keep_last`` and/or
        ``keep_best=(metric, "min"|"max")`` only the last ``keep_last`` versions plus the
        best one are kept; the refs of the others are dropped (their content goes at the
        next ``gc``).  The new version's ref is written before any old ref is dropped, so a
        crash never loses the newest version.  The metric value of a version is
        ``metric_value`` if given, else the latest value of ``metric`` logged by
        :meth:`log`, else the one in :meth:`summary`; a version without one is never "best".
        With neither keep option every version is kept.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: bad ``name``, ``keep_last`` or ``keep_best``.
        """
        src = Path(path)
        if name is None:
            name = src.name.split(".", 1)[0] if not src.name.startswith(".") else src.name
        if not name or "/" in name or name in (".", "..") or "\n" in name:
            raise ValueError(f"output name {name!r} must be a simple name without '/'")
        if keep_last is not None and (not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1):
            raise ValueError(f"keep_last must be a positive integer, got {keep_last!r}")
        metric = None
        if keep_best is not None:
            if (
                not isinstance(keep_best, (tuple, list))
                or len(keep_best) != 2
                or not isinstance(keep_best[0], str)
                or keep_best[1] not in ("min", "max")
            ):
                raise ValueError(f"keep_best must be (metric, 'min' or 'max'), got {keep_best!r}")
            metric, direction = keep_best
            if metric_value is None:
                with self._lock:
                    metric_value = self._last_metrics.get(metric, self._summary.get(metric))
        if metric_value is not None:
            try:
                metric_value = float(metric_value)
            except (TypeError, ValueError):
                raise ValueError(f"metric value {metric_value!r} for output {name!r} is not a number") from None
        tree = self._ingest_path(src)
        prefix = f"{self.run_id}/output/{name}/"
        with ref_naming(self.store):
            existing = _output_refs(self.store, self.run_id, name)
            version = max((v for v, _ in existing), default=0) + 1
            record = {
                "run_id": self.run_id,
                "role": "output",
                "output": name,
                "version": version,
                "tree": tree,
                "source": str(src.absolute()),
                "saved_at": time.time(),
                "metric": metric,
                "value": metric_value,
            }
            # The new version's ref first: a crash after this line never loses it.
            self.store.set_ref(
                REF_KIND, f"{prefix}{version}", tree, meta={k: v for k, v in record.items() if k != "tree"}
            )
            versions = existing + [(version, record)]
            keep = {v for v, _ in versions}
            if keep_last is not None or keep_best is not None:
                keep = {v for v, _ in versions[-keep_last:]} if keep_last is not None else set()
                if keep_best is not None:
                    scored = [
                        (m["value"], v) for v, m in versions if m.get("metric") == metric and m.get("value") is not None
                    ]
                    if scored:
                        best = (min if direction == "min" else max)(scored, key=lambda t: (t[0], -t[1]))
                        keep.add(best[1])
                keep.add(version)
            for v, _ in versions:
                if v not in keep:
                    self.store.delete_ref(REF_KIND, f"{prefix}{v}")
        with self._lock:
            self.meta.setdefault("outputs", {})[name] = [
                {
                    "version": v,
                    "tree": m.get("tree", tree if v == version else None),
                    "ref": f"{REF_KIND}/{prefix}{v}",
                    "value": m.get("value"),
                    "metric": m.get("metric"),
                }
                for v, m in versions
                if v in keep
            ]
            atomic_write_json(self.run_dir / "meta.json", self.meta)
        self.log_text(f"saved output {name} version {version} (tree {tree[:12]})")
        return {**record, "ref": f"{REF_KIND}/{prefix}{version}"}

    def archive(self, path: str | os.PathLike[str], role: str = "output") -> str:
        """Store a file or directory in the store as a tree linked to this run; return the tree id.

        A file becomes a one-file tree named after it.  The ref is
        ``run/<run_id>/archive/<role>/<n>``.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: ``role`` is not a simple name.
        """
        if not role or "/" in role or role in (".", "..") or "\n" in role:
            raise ValueError(f"archive role {role!r} must be a simple name without '/'")
        src = Path(path)
        tree = self._ingest_path(src)
        prefix = f"{self.run_id}/archive/{role}/"
        with ref_naming(self.store):
            taken = [r.name[len(prefix) :] for r in self.store.list_refs(REF_KIND) if r.name.startswith(prefix)]
            n = max((int(t) for t in taken if t.isdigit()), default=-1) + 1
            name = f"{prefix}{n}"
            self.store.set_ref(
                REF_KIND, name, tree, meta={"run_id": self.run_id, "role": role, "source": str(src.absolute())}
            )
        with self._lock:
            self.meta.setdefault("archives", []).append(
                {"role": role, "tree": tree, "ref": f"{REF_KIND}/{name}", "source": str(src.absolute())}
            )
            atomic_write_json(self.run_dir / "meta.json", self.meta)
        self.log_text(f"archived {src} as {role} (tree {tree[:12]})")
        return tree

    def record_input(self, name: str, tree: str, path: Path) -> None:
        """Record artifact ``name`` (tree ``tree``, installed at ``path``) as an input of this run.

        Repeated calls for the same name and tree cost nothing.  The tree is kept alive by a
        ref while the run exists (when the tree is in this run's store).
        """
        key = (name, tree)
        with self._lock:
            if key in self._inputs_seen:
                return
            self._inputs_seen.add(key)
            inputs = self.meta.setdefault("inputs", [])
            inputs.append({"name": name, "tree": tree, "path": str(path), "at": time.time()})
            atomic_write_json(self.run_dir / "meta.json", self.meta)
        if self.store.has_tree(tree):
            self.store.set_ref(
                REF_KIND,
                f"{self.run_id}/input/{name}",
                tree,
                meta={"run_id": self.run_id, "role": "input", "artifact": name},
            )
        self.log_text(f"input {name} = {tree}")

    def snapshot_code(self, workspace_root: str | os.PathLike[str] | None = None, **kw: Any) -> dict[str, Any]:
        """Snapshot the workspace into the store and link it as this run's code.

        Raises: as :func:`runicorn.snapshot_workspace`.
        """
        from runicorn.snapshot.workspace import snapshot_workspace

        root = Path(workspace_root) if workspace_root is not None else Path.cwd()
        result = snapshot_workspace(root, None, storage=self.store.root, run_id=self.run_id, **kw)
        with self._lock:
            self.meta["code_tree"] = result["tree"]
            self.meta["workspace_root"] = result["workspace_root"]
            if result["git"] is not None:
                self.meta["git"] = result["git"]
            atomic_write_json(self.run_dir / "meta.json", self.meta)
        return result

    # ------------------------------------------------------------------ lifecycle
    def _write_status(self, status: str, **extra: Any) -> None:
        record = {"status": status, "started_at": self.meta["created_at"], **extra}
        atomic_write_json(self.run_dir / "status.json", record)

    def finish(self, status: str = "finished") -> None:
        """Mark the run ended with ``status`` (``finished``, ``failed``, ``interrupted``...)."""
        if self.status != "running":
            return
        self.status = status
        self._write_status(status, ended_at=time.time())
        self.log_text(f"run {status}")
        upsert_run(self.store, self.run_id, self.path, self.run_dir, status, self.meta["created_at"])
        with _active_lock:
            if self in _active:
                _active.remove(self)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("interrupted")
        else:
            self.finish("failed")


def _output_refs(store: Any, run_id: str, name: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(version, ref meta plus ``tree``) of run ``run_id``'s output versions, oldest first."""
    prefix = f"{run_id}/output/"
    found: list[tuple[int, dict[str, Any]]] = []
    for r in store.list_refs(REF_KIND):
        if not r.name.startswith(prefix):
            continue
        out, _, ver = r.name[len(prefix) :].rpartition("/")
        if not ver.isdigit() or (name is not None and out != name):
            continue
        found.append((int(ver), {**(r.meta or {}), "output": out, "tree": r.tree}))
    found.sort(key=lambda t: (t[1]["output"], t[0]))
    return found


def list_outputs(run_id: str, storage: str | os.PathLike[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """The kept versions of each rolling output of run ``run_id``: ``{name: [version record, ...]}``.

    Each record has ``version``, ``tree``, ``ref``, ``metric``, ``value``, ``saved_at`` and
    ``source``; oldest first.  Read from the store's refs (the source of truth).
    """
    from runicorn.store import open_store

    store = open_store(Path(storage).expanduser()) if storage is not None else open_store()
    result: dict[str, list[dict[str, Any]]] = {}
    for version, m in _output_refs(store, run_id):
        result.setdefault(m["output"], []).append(
            {
                "version": version,
                "tree": m["tree"],
                "ref": f"{REF_KIND}/{run_id}/output/{m['output']}/{version}",
                "metric": m.get("metric"),
                "value": m.get("value"),
                "saved_at": m.get("saved_at"),
                "source": m.get("source"),
            }
        )
    return result


def _json_default(value: Any) -> Any:
    for attr in ("item", "tolist"):  # numpy / torch scalars and arrays
        fn = getattr(value, attr, None)
        if callable(fn):
            return fn()
    raise NotSerialisableError(f"value {value!r} of type {type(value).__name__} is not JSON serialisable")


def _record_artifact_use(name: str, tree: str, path: Path) -> None:
    run = current_run()
    if run is not None and run.status == "running":
        try:
            run.record_input(name, tree, path)
        except Exception as exc:  # noqa: BLE001 - lineage must never break data access
            import warnings

            warnings.warn(f"run {run.run_id}: could not record input {name} ({exc})", RuntimeWarning, stacklevel=3)


def _watch_artifacts() -> None:
    """Have ``artifact()`` report what it hands out while a run is active (lineage)."""
    from runicorn.lineage import observers

    if _record_artifact_use not in observers:
        observers.append(_record_artifact_use)


def _refuse_taken_run_id(store: Any, claim: Any, run_id: str, run_dir: Path) -> None:
    """Raise FileExistsError if ``run_id`` is in use anywhere in the store (``claim``: what
    the store's run claim found, inside its write transaction)."""
    if claim.indexed_dir is not None:
        existing = store.root / claim.indexed_dir
        if existing.is_dir() or existing == run_dir:
            raise FileExistsError(
                f"{existing}: a run with id {run_id!r} already exists (run ids are unique in {store.root})"
            )
    if claim.ref_name is not None:
        raise FileExistsError(
            f"run id {run_id!r} is already in use in {store.root}: ref {REF_KIND}/{claim.ref_name} exists"
        )


def init(
    path: str | None = None,
    storage: str | os.PathLike[str] | None = None,
    run_id: str | None = None,
    alias: str | None = None,
    snapshot_code: bool = False,
    workspace_root: str | os.PathLike[str] | None = None,
    *,
    project: str | None = None,
    name: str | None = None,
) -> Run:
    """Start a run in ``<storage_root>/<path>/runs/<run_id>/``; return it.

    ``path`` is ``"<project>/<experiment>"`` (or give ``project=``/``name=``).

    Raises:
        ValueError: a bad path or run id.
        FileExistsError: a run with this id already exists (at any path of the store), or
            refs ``run/<run_id>/...`` do.
    """
    from runicorn.store import open_store

    store = open_store(storage)
    rel = _run_path(path, project, name)
    chosen = run_id is not None
    if run_id is None:
        run_id = new_run_id()
    elif not valid_run_id(run_id):
        raise ValueError(
            f"run id {run_id!r} must be a letter or digit followed by at most "
            f"{RUN_ID_MAX_LEN - 1} letters, digits, '_', '-' or '.'"
        )
    runs_dir = store.root.joinpath(*rel.split("/"), "runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    run_dir = runs_dir / run_id
    # A run id names a ref namespace (run/<id>/...) and an index row, so it must be unique
    # in the whole store, not only at this path.  For an id the caller chose, find_run_dir
    # first indexes a run on disk the index does not know yet (it rescans; that cannot run
    # inside a write transaction); the check that counts happens in one, below.  A fresh
    # random id needs no disk scan.
    if chosen:
        find_run_dir(store, run_id)
    now = time.time()
    parts = rel.split("/")
    meta: dict[str, Any] = {
        "run_id": run_id,
        "path": rel,
        "project": parts[0],
        "name": "/".join(parts[1:]) or None,
        "alias": alias,
        "created_at": now,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
    }
    # The checkout the run's code comes from (its workspace, else the working directory).
    # A code snapshot below asks git itself, beside its walk: in a large checkout a
    # second `git status` here would cost as much as that walk.
    if not snapshot_code:
        from runicorn.gitinfo import git_provenance

        git = git_provenance(workspace_root if workspace_root is not None else os.getcwd())
        if git is not None:
            meta["git"] = git
    with store.run_rows.claim(run_id, REF_KIND) as claim:
        _refuse_taken_run_id(store, claim, run_id, run_dir)
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise FileExistsError(f"{run_dir}: a run with id {run_id!r} already exists") from None
        try:
            # meta.json inside the transaction: a concurrent index rebuild then sees the run.
            atomic_write_json(run_dir / "meta.json", meta)
            claim.record(rel, os.path.relpath(run_dir, store.root), "running", now)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
    run = Run(store, run_id, rel, run_dir, meta)
    run._write_status("running")
    atomic_write_json(run_dir / "summary.json", {})
    (run_dir / "events.jsonl").touch()
    run.log_text(f"run {run_id} started at {rel}")
    with _active_lock:
        _active.append(run)
    _watch_artifacts()
    if snapshot_code:
        run.snapshot_code(workspace_root)
    return run


__all__ = ["Run", "init", "current_run", "new_run_id"]

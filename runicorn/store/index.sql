-- Runicorn index schema, version 4.
--
-- One SQLite database (archive/index.sqlite3, WAL) indexes what the files under
-- archive/ hold.  The files are the source of truth: blobs/<aa>/<sha256>,
-- manifests/<aa>/<tree>.json and refs/<kind>/<name>.json.  Everything here can be
-- rebuilt from them (`runicorn verify --repair`).
--
-- Reference counts are maintained by triggers, never recomputed by scanning:
--   blobs.refcount = number of tree_entries rows naming the blob
--   trees.refcount = number of refs rows naming the tree
-- so "which blobs are unreferenced" is a lookup in a partial index.
-- PRAGMA user_version holds the schema version; runicorn/store/index.py migrates.

CREATE TABLE IF NOT EXISTS blobs (
    sha256      TEXT PRIMARY KEY,           -- lowercase hex SHA-256 of the bytes
    size        INTEGER NOT NULL,           -- bytes
    refcount    INTEGER NOT NULL DEFAULT 0, -- tree entries naming this blob
    created_at  REAL NOT NULL,              -- unix seconds, first ingest
    touched_at  REAL NOT NULL               -- unix seconds, last ingest (gc grace)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_unreferenced ON blobs (touched_at) WHERE refcount = 0;

CREATE TABLE IF NOT EXISTS trees (
    tree        TEXT PRIMARY KEY,           -- tree id (schema/tree-id.md)
    file_count  INTEGER NOT NULL,
    total_size  INTEGER NOT NULL,
    refcount    INTEGER NOT NULL DEFAULT 0, -- refs naming this tree
    created_at  REAL NOT NULL,
    touched_at  REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trees_unreferenced ON trees (touched_at) WHERE refcount = 0;

CREATE TABLE IF NOT EXISTS tree_entries (
    tree        TEXT NOT NULL,
    path        TEXT NOT NULL,              -- POSIX relative path
    blob        TEXT NOT NULL,              -- sha256 of the bytes (symlink: of its target)
    mode        TEXT NOT NULL,              -- '100644' | '100755' | '120000'
    size        INTEGER NOT NULL,
    PRIMARY KEY (tree, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tree_entries_blob ON tree_entries (blob);

CREATE TABLE IF NOT EXISTS refs (
    kind        TEXT NOT NULL,              -- 'pin', 'run', 'binding', ...
    name        TEXT NOT NULL,
    tree        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    meta        TEXT NOT NULL DEFAULT '{}', -- JSON object
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_tree ON refs (tree);

-- Blobs a live writer has ingested but not yet put into a tree, and trees it has put
-- but not yet named by a ref: gc never takes them.  Rows of dead writers are dropped
-- by recovery.
CREATE TABLE IF NOT EXISTS holds (
    writer      TEXT NOT NULL,              -- archive/tmp/<writer>/ of a live process
    sha256      TEXT NOT NULL,              -- blob sha256 or tree id
    PRIMARY KEY (writer, sha256)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_sha256 ON holds (sha256);

-- Running totals so stats are O(1) at any size.
CREATE TABLE IF NOT EXISTS totals (
    name        TEXT PRIMARY KEY,           -- 'blob_count', 'blob_bytes'
    value       INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO totals (name, value) VALUES ('blob_count', 0), ('blob_bytes', 0);

-- Version 2: what each remote (runicorn/remotes, keyed by its URL) is known to hold, so
-- an unchanged push asks the remote nothing per object.  A cache only: rows are written
-- after the remote confirmed the object, and dropped when the remote's gc epoch changes
-- (a remote gc may have deleted unreferenced objects); losing the tables costs requests,
-- never data.
CREATE TABLE IF NOT EXISTS remote_objects (
    remote      TEXT NOT NULL,              -- canonical remote URL
    kind        TEXT NOT NULL,              -- 'blob' | 'tree'
    id          TEXT NOT NULL,              -- sha256 of the blob, or tree id
    PRIMARY KEY (remote, kind, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS remote_state (
    remote      TEXT PRIMARY KEY,
    epoch       TEXT NOT NULL               -- the remote's gc epoch when remote_objects was filled
) WITHOUT ROWID;

-- The last state of each remote ref this store pushed or pulled: a push moves a remote
-- ref only from this state (compare-and-swap), anything else is a conflict.
CREATE TABLE IF NOT EXISTS remote_refs (
    remote      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    tree        TEXT NOT NULL,
    etag        TEXT NOT NULL,              -- the remote's version tag of the ref object
    PRIMARY KEY (remote, kind, name)
) WITHOUT ROWID;

-- Triggers keep refcounts and totals exact.
CREATE TRIGGER IF NOT EXISTS tree_entries_ins AFTER INSERT ON tree_entries BEGIN
    UPDATE blobs SET refcount = refcount + 1 WHERE sha256 = NEW.blob;
END;
CREATE TRIGGER IF NOT EXISTS tree_entries_del AFTER DELETE ON tree_entries BEGIN
    UPDATE blobs SET refcount = refcount - 1 WHERE sha256 = OLD.blob;
END;
CREATE TRIGGER IF NOT EXISTS refs_ins AFTER INSERT ON refs BEGIN
    UPDATE trees SET refcount = refcount + 1 WHERE tree = NEW.tree;
END;
CREATE TRIGGER IF NOT EXISTS refs_del AFTER DELETE ON refs BEGIN
    UPDATE trees SET refcount = refcount - 1 WHERE tree = OLD.tree;
END;
CREATE TRIGGER IF NOT EXISTS refs_upd AFTER UPDATE OF tree ON refs BEGIN
    UPDATE trees SET refcount = refcount - 1 WHERE tree = OLD.tree;
    UPDATE trees SET refcount = refcount + 1 WHERE tree = NEW.tree;
END;
-- A blob or tree that (re)appears counts the references that already name it, so a
-- blob re-ingested after damage heals its refcount.
CREATE TRIGGER IF NOT EXISTS blobs_ins AFTER INSERT ON blobs BEGIN
    UPDATE blobs SET refcount = (SELECT COUNT(*) FROM tree_entries WHERE blob = NEW.sha256)
        WHERE sha256 = NEW.sha256;
    UPDATE totals SET value = value + 1 WHERE name = 'blob_count';
    UPDATE totals SET value = value + NEW.size WHERE name = 'blob_bytes';
END;
CREATE TRIGGER IF NOT EXISTS blobs_del AFTER DELETE ON blobs BEGIN
    UPDATE totals SET value = value - 1 WHERE name = 'blob_count';
    UPDATE totals SET value = value - OLD.size WHERE name = 'blob_bytes';
END;
CREATE TRIGGER IF NOT EXISTS trees_ins AFTER INSERT ON trees BEGIN
    UPDATE trees SET refcount = (SELECT COUNT(*) FROM refs WHERE tree = NEW.tree)
        WHERE tree = NEW.tree;
END;

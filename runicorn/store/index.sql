-- Runicorn index schema, version 10.
--
-- One SQLite database (archive/index.sqlite3, WAL) indexes what the files under
-- archive/ hold.  The files are the source of truth: blobs/<aa>/<sha256>,
-- pages (among the blobs, named the same way), manifests/<aa>/<tree>.json and
-- refs/<kind>/<name>.json.
-- Everything here can be rebuilt from them (`runicorn verify --repair`).
--
-- A tree is stored as pages (schema/pages.md): leaf pages list files, node pages list
-- pages, a tree names its top pages.  Only pages a tree adds get rows, so a snapshot
-- that changes one file adds a few rows, whatever the size of the tree.
--
-- Reference counts are kept as rows change, never recomputed by scanning:
--   blobs.refcount = sum of page_blobs.n naming the blob (files of leaf pages)
--   pages.refcount = page_children rows naming the page + trees whose pages list it
--   trees.refcount = number of refs rows naming the tree
-- so "which blobs are unreferenced" is a lookup in a partial index.  The triggers below
-- keep them, except blobs.refcount for page_blobs rows: the statements that insert or
-- delete links (runicorn/store/rows.py, gc) add or subtract each blob's sum in one
-- statement per batch (version 6: a trigger per link cost about 15 us, 1.5 s for the
-- 100,000 links of a first snapshot of 100,000 files).
--
-- Version 7: a link names its page and its blob or child page by their rows' integer ids,
-- not by 64-hex SHA-256s (a link of two 64-character keys, stored again in the index by
-- blob, was about half the index work of storing or collecting 100,000 files).  Page rows
-- go only when nothing names them (gc), so a link never outlives the page rows it names.  A link must outlive its blob's row: when a
-- blob's file is lost and a repair drops its row, the links naming it move to a
-- lost_blobs row and name it by that row's id negated; storing the blob again gives
-- them its new id back (trigger blobs_found).  So every link names either a blobs row
-- (id > 0) or a lost_blobs row (id < 0), and a blobs row means the blob is stored.
--
-- Version 9: no index of the links by blob, only of those naming lost blobs
-- (page_blobs_lost).  Snapshots add links for blobs spread over the whole store, so an
-- index by blob had a page written for almost every link a snapshot added or a gc
-- removed (half of a 1% change's index writes at 100,000 files); what asks "which links
-- name this blob" is a check or a repair, which scans the links once instead.
--
-- Version 10: a batch holds the blob rows it adds by their id range (hold_ranges), one
-- row per batch instead of a holds row per blob: a first snapshot of 100,000 files
-- wrote 100,000 rows keyed by random SHA-256s, twice (the table and holds_sha256).
-- PRAGMA user_version holds the schema version; runicorn/store/index.py migrates.

-- AUTOINCREMENT: an id is never given twice, so a link left behind by damage can never
-- count for another blob.
CREATE TABLE IF NOT EXISTS blobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT, -- what links name (page_blobs.blob)
    sha256      TEXT NOT NULL,              -- lowercase hex SHA-256 of the bytes
    size        INTEGER NOT NULL,           -- bytes
    refcount    INTEGER NOT NULL DEFAULT 0, -- tree entries naming this blob
    created_at  REAL NOT NULL,              -- unix seconds, first ingest
    touched_at  REAL NOT NULL               -- unix seconds, last ingest (gc grace)
);
CREATE UNIQUE INDEX IF NOT EXISTS blobs_sha256 ON blobs (sha256);
CREATE INDEX IF NOT EXISTS blobs_unreferenced ON blobs (touched_at) WHERE refcount = 0;

-- Blobs some leaf names that the store does not hold (their file was lost and a repair
-- dropped their row, or a rebuild met a leaf naming them): links name them as -id.
-- A row goes when no link names it any more, or when the blob is stored again.
CREATE TABLE IF NOT EXISTS lost_blobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256      TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS trees (
    tree        TEXT PRIMARY KEY,           -- tree id (schema/tree-id.md)
    file_count  INTEGER NOT NULL,
    total_size  INTEGER NOT NULL,
    refcount    INTEGER NOT NULL DEFAULT 0, -- refs naming this tree
    created_at  REAL NOT NULL,
    touched_at  REAL NOT NULL,
    depth       INTEGER,                    -- levels of node pages above the leaves
    pages       TEXT                        -- JSON array of the top page ids, in order
                                            -- (NULL only while a schema-4 store migrates)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trees_unreferenced ON trees (touched_at) WHERE refcount = 0;

-- Pages (archive/blobs/<aa>/<id>, schema/pages.md) and what each references: a leaf
-- the blobs of its files (n: how many of its files have those bytes), a node its child
-- pages.  A page's row is written before any row naming it, and goes only when its
-- refcount is 0 (gc), after its own links.
CREATE TABLE IF NOT EXISTS pages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT, -- what links name
    page        TEXT NOT NULL,              -- sha256 of the page's bytes
    leaf        INTEGER NOT NULL,           -- 1: lists files, 0: lists pages
    entries     INTEGER NOT NULL,           -- lines below its header
    size        INTEGER NOT NULL,           -- bytes of the page file
    refcount    INTEGER NOT NULL DEFAULT 0, -- nodes and trees naming it
    created_at  REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS pages_page ON pages (page);
CREATE INDEX IF NOT EXISTS pages_unreferenced ON pages (page) WHERE refcount = 0;

CREATE TABLE IF NOT EXISTS page_blobs (
    page        INTEGER NOT NULL,           -- pages.id of a leaf page
    blob        INTEGER NOT NULL,           -- blobs.id, or -lost_blobs.id
    n           INTEGER NOT NULL,           -- files of the page with these bytes
    PRIMARY KEY (page, blob)
) WITHOUT ROWID;
-- The links naming lost blobs, by blob: a lost blob stored again (trigger blobs_found) and
-- the lost rows no link names any more are found without a scan.  A query must say
-- "blob < 0" for SQLite to use it.
CREATE INDEX IF NOT EXISTS page_blobs_lost ON page_blobs (blob) WHERE blob < 0;

CREATE TABLE IF NOT EXISTS page_children (
    page        INTEGER NOT NULL,           -- pages.id of a node page
    child       INTEGER NOT NULL,           -- pages.id of a page it lists (each at most once)
    PRIMARY KEY (page, child)
) WITHOUT ROWID;
-- No index by child: counts are kept by the triggers below, gc walks down from parents,
-- and verify recounts with one grouped scan; an index would double each node's rows.

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
-- but not yet named by a ref: gc never takes them.  A row per lease (one operation's
-- holds) and object, so the index counts the operations holding an object and a lease
-- goes in one range delete (version 8; one row per writer and object before, counted in
-- the writer's memory).  Rows of dead writers are dropped by recovery.
CREATE TABLE IF NOT EXISTS holds (
    writer      TEXT NOT NULL,              -- archive/tmp/<writer>/ of a live process
    lease       INTEGER NOT NULL DEFAULT 0, -- the operation's lease, unique within the writer
    sha256      TEXT NOT NULL,              -- blob sha256 or tree id
    PRIMARY KEY (writer, lease, sha256)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holds_sha256 ON holds (sha256);

-- Blobs a lease holds by row id: the rows one batch added, ids first..last (ids are given
-- in order under the write lock, so a statement's new rows are one range, and ranges
-- never overlap).  Held like a holds row on each: gc looks up the range with the largest
-- first <= a blob's id.  Ids never come back (AUTOINCREMENT), so a range never covers a
-- row added later by someone else.  Version 10.
CREATE TABLE IF NOT EXISTS hold_ranges (
    first       INTEGER PRIMARY KEY,        -- blobs.id of the batch's first new row
    last        INTEGER NOT NULL,           -- blobs.id of its last new row
    writer      TEXT NOT NULL,              -- as holds.writer
    lease       INTEGER NOT NULL            -- as holds.lease
);
CREATE INDEX IF NOT EXISTS hold_ranges_lease ON hold_ranges (writer, lease);
-- A blob row a range holds is not deleted: the row is skipped (its file then stays too, as
-- gc unlinks only what no row names).  gc plans around ranges anyway; this guards against
-- a process started before its store was migrated to version 10, whose gc knows only
-- holds, and a repair first takes the blobs it forgets out of their ranges.  Version 10.
CREATE TRIGGER IF NOT EXISTS blobs_held_by_range BEFORE DELETE ON blobs
WHEN (SELECT last FROM hold_ranges WHERE first <= OLD.id ORDER BY first DESC LIMIT 1) >= OLD.id
BEGIN
    SELECT RAISE(IGNORE);
END;

-- Running totals so stats are O(1) at any size.  Kept by the statements that insert and
-- delete blob rows (runicorn/store/rows.py), one update per batch (version 7; a trigger
-- per row before: two more statements for each of 100,000 blobs stored or collected).
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
CREATE TRIGGER IF NOT EXISTS page_children_ins AFTER INSERT ON page_children BEGIN
    UPDATE pages SET refcount = refcount + 1 WHERE id = NEW.child;
END;
CREATE TRIGGER IF NOT EXISTS page_children_del AFTER DELETE ON page_children BEGIN
    UPDATE pages SET refcount = refcount - 1 WHERE id = OLD.child;
END;
CREATE TRIGGER IF NOT EXISTS trees_pages_ins AFTER INSERT ON trees WHEN NEW.pages IS NOT NULL BEGIN
    UPDATE pages SET refcount = refcount + 1 WHERE page IN (SELECT value FROM json_each(NEW.pages));
END;
CREATE TRIGGER IF NOT EXISTS trees_pages_del AFTER DELETE ON trees WHEN OLD.pages IS NOT NULL BEGIN
    UPDATE pages SET refcount = refcount - 1 WHERE page IN (SELECT value FROM json_each(OLD.pages));
END;
CREATE TRIGGER IF NOT EXISTS trees_pages_upd AFTER UPDATE OF pages ON trees BEGIN
    UPDATE pages SET refcount = refcount - 1
        WHERE OLD.pages IS NOT NULL AND page IN (SELECT value FROM json_each(OLD.pages));
    UPDATE pages SET refcount = refcount + 1
        WHERE NEW.pages IS NOT NULL AND page IN (SELECT value FROM json_each(NEW.pages));
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
-- A lost blob stored again takes over the links that named it lost, and counts them, so
-- a blob re-ingested after damage heals its refcount.
-- (A new row's id was never given before, so no other link names it yet.)
CREATE TRIGGER IF NOT EXISTS blobs_found AFTER INSERT ON blobs
    WHEN EXISTS (SELECT 1 FROM lost_blobs WHERE sha256 = NEW.sha256) BEGIN
    UPDATE blobs SET refcount = (SELECT COALESCE(SUM(n), 0) FROM page_blobs
        WHERE blob = -(SELECT id FROM lost_blobs WHERE sha256 = NEW.sha256) AND blob < 0)
        WHERE id = NEW.id;
    UPDATE page_blobs SET blob = NEW.id
        WHERE blob = -(SELECT id FROM lost_blobs WHERE sha256 = NEW.sha256) AND blob < 0;
    DELETE FROM lost_blobs WHERE sha256 = NEW.sha256;
END;
-- A tree that (re)appears counts the refs that already name it.
CREATE TRIGGER IF NOT EXISTS trees_ins AFTER INSERT ON trees BEGIN
    UPDATE trees SET refcount = (SELECT COUNT(*) FROM refs WHERE tree = NEW.tree)
        WHERE tree = NEW.tree;
END;

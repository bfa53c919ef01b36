-- Stat cache for snapshots, a row per workspace directory (schema/README.md, "Stat
-- cache"): a file whose (dev, ino, size, mtime_ns, ctime_ns) is unchanged since it was
-- hashed is not read again, unless it was recorded in the same timestamp tick as its
-- mtime ("racily clean").  ctime catches an edit whose mtime was put back (utime cannot
-- set ctime).  A directory whose files all match its row exactly (names and every lstat
-- field) and are all settled costs one comparison, not one per file.
CREATE TABLE IF NOT EXISTS stat_cache_dirs (
    dir         TEXT PRIMARY KEY,           -- absolute path, ending in "/"
    names       TEXT NOT NULL,              -- its regular files' names in path order, joined by "/"
    stats       BLOB NOT NULL,              -- per file: dev, ino, size, mtime_ns, ctime_ns, st_mode (int64 LE)
    digests     BLOB NOT NULL,              -- per file: the 32-byte SHA-256 of its content
    recorded    BLOB NOT NULL,              -- per file: wall clock (ns) when it was hashed (int64 LE)
    settled     INTEGER NOT NULL            -- 1: every file's mtime_ns < recorded - RACY_NS
) WITHOUT ROWID;

-- The leaf pages of the tree each workspace root's last snapshot stored (schema/pages.md),
-- so the next snapshot cuts again only the stretches of the tree where files changed.
-- A root's rows describe its stat_cache_dirs rows: every write of those rows drops the
-- rows of each root whose files it touches (the root, its parents, its subdirectories)
-- and writes its own root's only when no write came between its read of the cache and
-- its own (stat_cache_generation).
CREATE TABLE IF NOT EXISTS stat_cache_leaves (
    root        TEXT NOT NULL,              -- absolute path of the snapshot's root
    first       TEXT NOT NULL,              -- the leaf's first path (relative to root)
    length      INTEGER NOT NULL,           -- its entries
    last        TEXT NOT NULL,              -- its last path
    leaf        TEXT NOT NULL,              -- its page id
    closed      INTEGER NOT NULL,           -- 1: it ends at a cut, 0: at the end of the tree
    PRIMARY KEY (root, first)
) WITHOUT ROWID;

-- Per workspace root: the state (dev, ino, mtime_ns, ctime_ns) of each blobs/<aa> folder
-- when its last snapshot began checking its blobs, for the folders then at least
-- RACY_NS old (docs/assets.md).  Every blob the root's stat_cache_dirs rows name was in place
-- after that moment, so while a folder keeps its state (no file added, removed or renamed
-- in it) the next snapshot does not stat those blobs again.  Dropped with the root's
-- stat_cache_leaves rows.
CREATE TABLE IF NOT EXISTS stat_cache_seals (
    root        TEXT PRIMARY KEY,           -- absolute path of the snapshot's root
    folders     TEXT NOT NULL               -- JSON: {"<aa>": [dev, ino, mtime_ns, ctime_ns]}
) WITHOUT ROWID;

-- One row: how many times stat_cache_dirs has been written (see stat_cache_leaves).
CREATE TABLE IF NOT EXISTS stat_cache_generation (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    generation  INTEGER NOT NULL
);

-- Experiment runs known to this store (rebuilt from run directories).
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    path        TEXT NOT NULL,              -- '<project>/<experiment>'
    run_dir     TEXT NOT NULL,              -- relative to the storage root
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL
) WITHOUT ROWID;

-- Runicorn.toml / Artifacts.toml files seen binding or fetching (gc roots).  Version 4:
-- missing_since, when a gc first found the file missing (NULL while it exists); its
-- bindings are kept until it has been missing for the retention (docs/artifacts.md).
CREATE TABLE IF NOT EXISTS toml_usage (
    path          TEXT PRIMARY KEY,         -- absolute path of the TOML file
    last_seen     REAL NOT NULL,
    missing_since REAL                      -- unix seconds, or NULL
) WITHOUT ROWID;

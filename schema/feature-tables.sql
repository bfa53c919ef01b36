-- Stat cache for snapshots: a file whose (dev, ino, size, mtime_ns, ctime_ns) is unchanged
-- since it was hashed is not read again, unless it was recorded in the same timestamp tick
-- as its mtime ("racily clean").  ctime catches an edit whose mtime was put back (utime
-- cannot set ctime).
CREATE TABLE IF NOT EXISTS stat_cache (
    path        TEXT PRIMARY KEY,           -- absolute path
    dev         INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    ctime_ns    INTEGER NOT NULL,
    mode        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    recorded_ns INTEGER NOT NULL            -- wall clock when hashed
) WITHOUT ROWID;

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

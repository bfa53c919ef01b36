"""The hand-written validator enforces the JSON Schema in ``schema/`` (checked with jsonschema)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runicorn.errors import CorruptManifestError
from runicorn.sync.manifest_schema import validate_manifest_dict

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "schema" / "sync-manifest.schema.json").read_text())
RUN = "proj/exp/runs/20250101_120000_abc123"

VALID: dict[str, Any] = {
    "format_version": "1.0",
    "manifest_type": "full",
    "revision": 42,
    "snapshot_id": "550e8400-e29b-41d4-a716-446655440000",
    "generated_at": 1704067200.0,
    "server_hostname": "ml-server-01",
    "remote_root": "/data/experiments",
    "experiments": [
        {
            "run_id": "20250101_120000_abc123",
            "project": "proj",
            "name": "exp",
            "status": "completed",
            "created_at": 1704060000.0,
            "updated_at": 1704067000.0,
            "files": [
                {
                    "path": f"{RUN}/meta.json",
                    "size": 1024,
                    "mtime": 1704060000.0,
                    "priority": 1,
                    "is_append_only": False,
                },
                {
                    "path": f"{RUN}/events.jsonl",
                    "size": 524288,
                    "mtime": 1704067000.0,
                    "tail_hash": "a" * 64,
                    "priority": 3,
                    "is_append_only": True,
                },
            ],
            "tags": ["production", "v2"],
        }
    ],
    "statistics": {"total_experiments": 1, "total_files": 2, "total_bytes": 525312},
    "generator_version": "1.0",
}


def _mut(path: list[Any], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(VALID)
    cur: Any = d
    for k in path[:-1]:
        cur = cur[k]
    if value is KeyError:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return d


FILE = ["experiments", 0, "files", 0]
INVALID = [
    _mut(["revision"], -1),
    _mut(["revision"], "42"),
    _mut(["revision"], True),
    _mut(["manifest_type"], "partial"),
    _mut(["snapshot_id"], "nope"),
    _mut(["format_version"], "2.0"),
    _mut(["experiments"], {}),
    _mut(["remote_root"], KeyError),
    _mut([*FILE, "path"], "/etc/passwd"),
    _mut([*FILE, "path"], f"{RUN}/../../x"),
    _mut([*FILE, "path"], "../x"),
    _mut([*FILE, "path"], f"{RUN}//x"),
    _mut([*FILE, "path"], f"{RUN}/./x"),
    _mut([*FILE, "path"], "C:/x"),
    _mut([*FILE, "path"], f"{RUN}/x/"),
    _mut([*FILE, "path"], "a\\..\\b"),
    _mut([*FILE, "path"], "a\nb"),
    _mut([*FILE, "path"], ""),
    _mut([*FILE, "size"], -5),
    _mut([*FILE, "size"], 1 << 50),
    _mut([*FILE, "size"], 1.5),
    _mut([*FILE, "mtime"], "yesterday"),
    _mut([*FILE, "priority"], 9),
    _mut([*FILE, "is_append_only"], "yes"),
    _mut([*FILE, "tail_hash"], "XYZ"),
    _mut([*FILE, "size"], KeyError),
    _mut(["experiments", 0, "project"], "a/b"),
    _mut(["experiments", 0, "project"], ".runicorn-sync"),
    _mut(["experiments", 0, "run_id"], ".."),
    _mut(["experiments", 0, "name"], "../x"),
    _mut(["experiments", 0, "tags"], [1]),
    _mut(["experiments", 0, "files"], KeyError),
    _mut(["statistics", "total_files"], -1),
    [],
    "manifest",
    None,
]
VALID_SAMPLES = [
    VALID,
    _mut(["experiments"], []),
    _mut(["manifest_type"], "active"),
    _mut([*FILE, "priority"], KeyError),
    _mut(["experiments", 0, "name"], "deep/er/name"),
    _mut(["statistics"], KeyError),
    _mut(["extra_field_from_the_future"], 1),
]


@pytest.mark.parametrize("doc", VALID_SAMPLES)
def test_valid_samples_agree(doc: Any) -> None:
    jsonschema.validate(doc, SCHEMA)
    validate_manifest_dict(doc)


@pytest.mark.parametrize("doc", INVALID)
def test_invalid_samples_agree(doc: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)
    with pytest.raises(CorruptManifestError):
        validate_manifest_dict(doc)


def test_generated_manifest_matches_schema(tmp_path: Path) -> None:
    from runicorn.sync.server.generator import ManifestGenerator
    from tools.testbed.run_trees import make_tree

    make_tree(tmp_path, 3)
    _, path = ManifestGenerator(tmp_path).generate()
    jsonschema.validate(json.loads(path.read_bytes()), SCHEMA)


# A trailing newline slipped past the old "$"-anchored patterns (Python's "$" also matches
# before a final "\n"), so the generator published paths every client then refused.
# JSON Schema patterns are ECMA regexes, where "$" is the true end; jsonschema's Python
# regex engine differs there, so these are checked against the hand-written validator.
TRAILING_NEWLINE = [
    _mut([*FILE, "path"], f"{RUN}/f\n"),
    _mut(["experiments", 0, "name"], "exp\n"),
    _mut(["experiments", 0, "project"], "proj\n"),
    _mut(["experiments", 0, "run_id"], "20250101_120000_abc123\n"),
    _mut(["snapshot_id"], VALID["snapshot_id"] + "\n"),
    _mut(["format_version"], "1.0\n"),
    _mut([*FILE, "tail_hash"], "a" * 63 + "\n"),
]


@pytest.mark.parametrize("doc", TRAILING_NEWLINE)
def test_trailing_newline_is_refused(doc: Any) -> None:
    with pytest.raises(CorruptManifestError, match=r"experiments\[0\]|root"):
        validate_manifest_dict(doc)


def test_paths_use_the_shared_relpath_rules() -> None:
    from runicorn.sync import manifest_schema

    assert not hasattr(manifest_schema, "_RELPATH_RE")
    with pytest.raises(CorruptManifestError, match=r"files\[0\]\.path.*backslash"):
        validate_manifest_dict(_mut([*FILE, "path"], f"{RUN}/weird\\name.txt"))
    with pytest.raises(CorruptManifestError, match=r"files\[0\]\.path.*newline"):
        validate_manifest_dict(_mut([*FILE, "path"], f"{RUN}/bad\nname"))

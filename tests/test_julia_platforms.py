"""Platform tags, triplets, matching and variant selection as Julia's Base.BinaryPlatforms does them.

Cases are taken from Julia's own suite: julia test/binaryplatforms.jl at commit
0653037bc31d2f393c4035b6ba415d2f7f1abf15 ("Platform validation", "Platform properties",
"Triplet parsing", "platforms_match()", "select_platform"), and the rules from
base/binaryplatforms.jl at commit 03e4c1155dcbe9ad9a7514c211f67dd6fc133d9f.  Cases that
exercise features of later Julia only (the `cxxlib` tag, Windows `ucrt`) are left out.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.artifacts.platform import (
    make_platform,
    parse_platform,
    parse_triplet,
    platforms_match,
    select_variant,
    triplet,
)
from runicorn.errors import ArtifactError, TomlFormatError


def P(arch: str, os_name: str, **tags: str) -> dict[str, str]:
    """Julia's ``Platform(arch, os; tags...)``."""
    return make_platform({"arch": arch, "os": os_name, **tags})


def test_constructor_normalises_like_julia() -> None:
    for os_name in ("Linux", "linux", "FREEBSD", "wiNDows", "MacOS"):
        assert P("x86_64", os_name)["os"] == os_name.lower()
    for arch in ("x86_64", "ARMv7l", "armv6l", "I686", "pOWerpc64le"):
        assert P(arch, "linux")["arch"] == arch.lower()
    # Julia's CPUID.normalize_arch table
    assert P("amd64", "freebsd")["arch"] == "x86_64"
    assert P("ARM", "linux")["arch"] == "armv7l"
    assert P("ppc64le", "linux")["arch"] == "powerpc64le"
    for alias, arch in (
        ("i386", "i686"),
        ("i586", "i686"),
        ("armv6", "armv6l"),
        ("armv7", "armv7l"),
        ("armv8l", "armv7l"),
        ("arm64", "aarch64"),
    ):
        assert P(alias, "linux")["arch"] == arch
    # a linux platform without libc is glibc; a 32-bit ARM linux one without call_abi is eabihf
    assert P("x86_64", "linux") == {"arch": "x86_64", "os": "linux", "libc": "glibc"}
    assert P("armv7l", "linux")["call_abi"] == "eabihf"
    assert P("armv6l", "linux")["call_abi"] == "eabihf"
    assert P("armv7l", "linux", call_abi="eabi")["call_abi"] == "eabi"
    assert "call_abi" not in P("x86_64", "macos") and "libc" not in P("x86_64", "windows")
    # version tags are versions: "5" is "5.0.0"
    assert P("x86_64", "linux", libgfortran_version="5")["libgfortran_version"] == "5.0.0"
    assert P("x86_64", "macos", os_version="14")["os_version"] == "14.0.0"
    assert P("x86_64", "linux", libgfortran_version="5") == P("x86_64", "linux", libgfortran_version="5.0.0")
    # Julia's add_tag! refuses these characters
    with pytest.raises(ArtifactError, match="'\\+' is not allowed"):
        P("x86_64", "linux", foo="a+b")
    with pytest.raises(ArtifactError, match="'-' is not allowed"):
        P("x86_64", "linux", cuda="12-2")


@pytest.mark.parametrize(
    "platform,expected",
    [
        (P("i686", "Windows"), "i686-w64-mingw32"),
        (P("x86_64", "linux", libc="musl"), "x86_64-linux-musl"),
        (P("armv7l", "linux", libc="musl"), "armv7l-linux-musleabihf"),
        (P("armv6l", "linux", libc="musl", call_abi="eabihf"), "armv6l-linux-musleabihf"),
        (P("armv6l", "linux", call_abi="eabi"), "armv6l-linux-gnueabi"),
        (P("x86_64", "linux"), "x86_64-linux-gnu"),
        (P("armv6l", "linux"), "armv6l-linux-gnueabihf"),
        (P("x86_64", "macos"), "x86_64-apple-darwin"),
        (P("x86_64", "macos", os_version="16"), "x86_64-apple-darwin16"),
        (P("x86_64", "freebsd"), "x86_64-unknown-freebsd"),
        (P("i686", "freebsd"), "i686-unknown-freebsd"),
        (P("x86_64", "linux", libgfortran_version="3", cxxstring_abi="cxx11"), "x86_64-linux-gnu-libgfortran3-cxx11"),
        (P("armv7l", "linux", libc="musl", cxxstring_abi="cxx03"), "armv7l-linux-musleabihf-cxx03"),
        (P("x86_64", "linux", libstdcxx_version="3.4.26"), "x86_64-linux-gnu-libstdcxx26"),
        (P("armv7l", "Linux", libgfortran_version="3"), "armv7l-linux-gnueabihf-libgfortran3"),
        # extra tags follow, sorted (Julia's "Deterministic serialization" testset)
        (P("aarch64", "macos", tag9="d", cuda="10.1", tag1="a"), "aarch64-apple-darwin-cuda+10.1-tag1+a-tag9+d"),
    ],
)
def test_triplet_printing(platform: dict[str, str], expected: str) -> None:
    assert triplet(platform) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("x86_64-linux-gnu", P("x86_64", "linux")),
        ("x86_64-linux-musl", P("x86_64", "linux", libc="musl")),
        ("i686-unknown-linux-gnu", P("i686", "linux")),
        ("x86_64-apple-darwin", P("x86_64", "macos")),
        ("x86_64-apple-darwin14", P("x86_64", "macos", os_version="14")),
        ("x86_64-apple-darwin17.0.0", P("x86_64", "macos", os_version="17")),
        ("armv7l-pc-linux-gnueabihf", P("armv7l", "linux")),
        ("armv7l-linux-musleabihf", P("armv7l", "linux", libc="musl")),
        ("armv6l-linux-gnueabi", P("armv6l", "linux", call_abi="eabi")),
        ("arm-linux-gnueabihf", P("armv7l", "linux")),
        ("aarch64-unknown-linux-gnu", P("aarch64", "linux")),
        ("powerpc64le-linux-gnu", P("powerpc64le", "linux")),
        ("ppc64le-linux-gnu", P("powerpc64le", "linux")),
        ("x86_64-w64-mingw32", P("x86_64", "windows")),
        ("i686-w64-mingw32", P("i686", "windows")),
        ("x86_64-unknown-freebsd11.1", P("x86_64", "freebsd", os_version="11.1")),
        ("i686-unknown-freebsd11.1", P("i686", "freebsd", os_version="11.1")),
        ("amd64-unknown-freebsd12.0", P("x86_64", "freebsd", os_version="12.0")),
        ("i386-unknown-freebsd10.3", P("i686", "freebsd", os_version="10.3")),
        ("aarch64-apple-darwin18.7", P("aarch64", "macos", os_version="18.7")),
        ("arm64-apple-darwin20", P("aarch64", "macos", os_version="20")),
        ("x86_64-linux-gnu-gcc7", P("x86_64", "linux", libgfortran_version="4")),
        ("x86_64-linux-gnu-gcc4-cxx11", P("x86_64", "linux", libgfortran_version="3", cxxstring_abi="cxx11")),
        ("x86_64-linux-gnu-cxx11", P("x86_64", "linux", cxxstring_abi="cxx11")),
        ("x86_64-linux-gnu-libgfortran3-cxx03", P("x86_64", "linux", libgfortran_version="3", cxxstring_abi="cxx03")),
        ("x86_64-linux-gnu-libstdcxx26", P("x86_64", "linux", libstdcxx_version="3.4.26")),
        ("aarch64-linux-gnueabihf", P("aarch64", "linux", call_abi="eabihf")),
        ("x86_64-linux-gnu-march+avx2", P("x86_64", "linux", march="avx2")),
        ("x86_64-linux-gnu-march+x86_64-cuda+10.1", P("x86_64", "linux", march="x86_64", cuda="10.1")),
        ("riscv64-linux-gnu", P("riscv64", "linux")),
        ("x86_64-unknown-openbsd", P("x86_64", "openbsd")),
    ],
)
def test_triplet_parsing(text: str, expected: dict[str, str]) -> None:
    assert parse_triplet(text) == expected
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["totally FREEFORM text!!1!!!1!", "invalid-triplet-here", "x86_64-w32-mingw64", ""])
def test_triplet_parsing_refuses_what_julia_refuses(text: str) -> None:
    with pytest.raises(ArtifactError, match="is neither a triplet"):
        parse_triplet(text)


ROUND_TRIP = [
    "x86_64-linux-gnu",
    "x86_64-linux-musl",
    "i686-linux-gnu",
    "aarch64-linux-gnu",
    "aarch64-linux-musl",
    "armv7l-linux-gnueabihf",
    "armv7l-linux-musleabihf",
    "armv6l-linux-gnueabihf",
    "armv6l-linux-gnueabi",
    "powerpc64le-linux-gnu",
    "riscv64-linux-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    "x86_64-apple-darwin14",
    "x86_64-w64-mingw32",
    "i686-w64-mingw32",
    "x86_64-unknown-freebsd",
    "x86_64-unknown-freebsd11.1",
    "x86_64-unknown-openbsd",
    "x86_64-linux-gnu-libgfortran3",
    "x86_64-linux-gnu-libgfortran5-cxx11",
    "x86_64-linux-gnu-cxx03",
    "x86_64-linux-gnu-libstdcxx26",
    "x86_64-linux-gnu-libgfortran4-cxx11-libstdcxx22",
    "armv7l-linux-musleabihf-cxx03",
    "x86_64-linux-gnu-march+avx2",
    "x86_64-linux-gnu-cuda+10.1-march+x86_64",
    "x86_64-linux-gnu-sanitize+memory",
    "aarch64-apple-darwin20-march+armv8_4_crypto_sve",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_triplets_round_trip(text: str) -> None:
    p = parse_triplet(text)
    assert triplet(p) == text
    assert parse_triplet(triplet(p)) == p


def test_platforms_match_like_julia() -> None:
    linux = P("x86_64", "linux")
    for gf in (None, "3", "5"):
        for cxx in (None, "3.4.18", "3.4.26"):
            for abi in (None, "cxx03", "cxx11"):
                tags = {
                    k: v
                    for k, v in (("libgfortran_version", gf), ("libstdcxx_version", cxx), ("cxxstring_abi", abi))
                    if v is not None
                }
                p = P("x86_64", "linux", **tags)
                assert platforms_match(linux, p) and platforms_match(p, linux)
                assert platforms_match(parse_triplet(triplet(linux)), p)
                assert platforms_match(linux, parse_triplet(triplet(p)))
    # julia_version is compared on major.minor only
    assert platforms_match(P("x86_64", "linux", julia_version="1.5.0"), P("x86_64", "linux", julia_version="1.5.1"))
    assert not platforms_match(P("x86_64", "linux", julia_version="1.5.0"), P("x86_64", "linux", julia_version="1.6.0"))
    assert not platforms_match(linux, P("i686", "linux"))
    assert not platforms_match(linux, P("x86_64", "windows"))
    assert not platforms_match(linux, P("x86_64", "macos"))
    for arch in ("x86_64", "i686", "aarch64", "armv6l", "armv7l", "powerpc64le"):
        a = P(arch, "linux", libgfortran_version="5", cxxstring_abi="cxx11")
        for kw in (
            {"libgfortran_version": "3"},
            {"cxxstring_abi": "cxx03"},
            {"libgfortran_version": "4", "cxxstring_abi": "cxx11"},
            {"libgfortran_version": "3", "cxxstring_abi": "cxx03"},
        ):
            assert not platforms_match(P(arch, "linux", **kw), a)
    # The platform selected for is a host: its os_version and libstdcxx_version are caps.
    host = P("x86_64", "macos", os_version="14", libstdcxx_version="3.4.26")
    m = lambda **kw: platforms_match(P("x86_64", "macos", **kw), host)  # noqa: E731
    assert m()
    assert m(os_version="14")
    assert m(os_version="13")
    assert not m(os_version="15")
    assert m(libstdcxx_version="3.4.18")
    assert m(os_version="10", libstdcxx_version="3.4.18")
    assert not m(os_version="10", libstdcxx_version="3.4.27")
    assert not m(os_version="14", libstdcxx_version="4")


SELECT_PLATFORM_ENTRIES = [
    # Typical binning test
    (P("x86_64", "linux", libgfortran_version="3"), "linux4"),
    (P("x86_64", "linux", libgfortran_version="4"), "linux7"),
    (P("x86_64", "linux", libgfortran_version="5"), "linux8"),
    # Ambiguity test
    (P("aarch64", "linux", libgfortran_version="3"), "linux3"),
    (P("aarch64", "linux", libgfortran_version="3", libstdcxx_version="3.4.18"), "linux5"),
    (P("aarch64", "linux", libgfortran_version="3", libstdcxx_version="3.4.18", foo="bar"), "linux9"),
    # OS test
    (P("x86_64", "macos", libgfortran_version="3"), "mac4"),
    (P("x86_64", "windows", cxxstring_abi="cxx11"), "win"),
]


def _select(entries: list[tuple[dict[str, str], str]], host: dict[str, str]) -> str | None:
    i = select_variant([p for p, _ in entries], host)
    return None if i is None else entries[i][1]


@pytest.mark.parametrize("seed", range(8))
def test_select_platform_like_julia_in_any_order(seed: int) -> None:
    entries = SELECT_PLATFORM_ENTRIES[:]
    random.Random(seed).shuffle(entries)
    s = lambda host: _select(entries, host)  # noqa: E731
    assert s(P("x86_64", "linux")) == "linux8"
    assert s(P("x86_64", "linux", libgfortran_version="4")) == "linux7"
    assert s(P("aarch64", "linux")) == "linux3"
    assert s(P("aarch64", "linux", libgfortran_version="3")) == "linux3"
    assert s(P("aarch64", "linux", libgfortran_version="3", libstdcxx_version="3.4.18")) == "linux5"
    assert s(P("aarch64", "linux", libgfortran_version="4")) is None
    assert s(P("x86_64", "macos")) == "mac4"
    assert s(P("x86_64", "macos", libgfortran_version="4")) is None
    assert s(P("x86_64", "windows", cxxstring_abi="cxx11")) == "win"
    assert s(P("x86_64", "windows", cxxstring_abi="cxx03")) is None
    assert s(P("x86_64", "freebsd")) is None
    # "most complete match": an extra tag on the variant is penalised, not rewarded
    both = [(P("x86_64", "linux"), "normal"), (P("x86_64", "linux", sanitize="memory"), "sanitized")]
    random.Random(seed).shuffle(both)
    assert _select(both, P("x86_64", "linux")) == "normal"
    assert _select(both, P("x86_64", "linux", sanitize="memory")) == "sanitized"
    # ties are broken by reverse-sorting by triplet
    gf = [
        (P("x86_64", "linux", libgfortran_version="3"), "libgfortran3"),
        (P("x86_64", "linux", libgfortran_version="4"), "libgfortran4"),
    ]
    random.Random(seed).shuffle(gf)
    assert _select(gf, P("x86_64", "linux")) == "libgfortran4"
    assert _select(gf, P("x86_64", "linux", libgfortran_version="3")) == "libgfortran3"


# Every platform Julia's test/binaryplatforms.jl constructs or parses (commit above), as
# (os, arch, tags) after Julia's normalisation, deduplicated.
JULIA_TEST_PLATFORMS = sorted(
    {
        triplet(p): p
        for p in [
            *(P("x86_64", o) for o in ("linux", "freebsd", "windows", "macos")),
            *(P(a, "linux") for a in ("x86_64", "armv7l", "armv6l", "i686", "powerpc64le", "aarch64", "riscv64")),
            P("aarch64", "macos"),
            P("armv7l", "windows"),
            P("i686", "windows"),
            P("i686", "freebsd"),
            P("armv7l", "linux", call_abi="eabi"),
            P("armv6l", "linux", call_abi="eabi"),
            P("x86_64", "linux", libc="musl"),
            P("armv7l", "linux", libc="musl"),
            P("aarch64", "linux", libc="musl"),
            P("armv6l", "linux", libc="musl", call_abi="eabihf"),
            P("x86_64", "macos", os_version="16"),
            P("x86_64", "macos", os_version="14"),
            P("x86_64", "macos", os_version="17"),
            P("aarch64", "macos", os_version="18.7"),
            P("aarch64", "macos", os_version="20"),
            P("aarch64", "macos", os_version="20", march="armv8_4_crypto_sve"),
            P("x86_64", "freebsd", os_version="11.1"),
            P("i686", "freebsd", os_version="11.1"),
            P("x86_64", "freebsd", os_version="12.0"),
            P("i686", "freebsd", os_version="10.3"),
            P("x86_64", "linux", libgfortran_version="3", cxxstring_abi="cxx11"),
            P("x86_64", "linux", libgfortran_version="3", cxxstring_abi="cxx03"),
            P("armv7l", "linux", libc="musl", cxxstring_abi="cxx03"),
            P("x86_64", "linux", libstdcxx_version="3.4.26"),
            P("x86_64", "linux", libstdcxx_version="3.4.18"),
            P("x86_64", "linux", cxxstring_abi="cxx11"),
            P("x86_64", "linux", cxxstring_abi="cxx03"),
            P("x86_64", "linux", libgfortran_version="3"),
            P("x86_64", "linux", libgfortran_version="4"),
            P("x86_64", "linux", libgfortran_version="5"),
            P("x86_64", "linux", libgfortran_version="5", cxxstring_abi="cxx11"),
            P("aarch64", "linux", libgfortran_version="3"),
            P("aarch64", "linux", libgfortran_version="3", libstdcxx_version="3.4.18"),
            P("aarch64", "linux", libgfortran_version="3", libstdcxx_version="3.4.18", foo="bar"),
            P("x86_64", "macos", libgfortran_version="3"),
            P("x86_64", "windows", cxxstring_abi="cxx11"),
            P("x86_64", "linux", sanitize="memory"),
            P("aarch64", "linux", call_abi="eabihf"),
            P("x86_64", "linux", march="avx2"),
            P("x86_64", "linux", march="x86_64", cuda="10.1"),
            P("x86_64", "linux", customtag="foo"),
            P("x86_64", "linux", cuda="11"),
            P("x86_64", "linux", julia_version="1.6.0"),
            P("jpu", "linux"),
        ]
    }.items()
)


def _write_variants(path: Path, platforms: list[tuple[str, dict[str, str]]]) -> dict[str, str]:
    """A Runicorn.toml with one [[lib]] variant per platform; returns triplet -> tree."""
    import hashlib

    trees: dict[str, str] = {}
    parts = []
    for t, p in platforms:
        trees[t] = hashlib.sha256(t.encode()).hexdigest()
        tags = "".join(f'{k} = "{v}"\n' for k, v in p.items())
        parts.append(f'[[lib]]\n{tags}tree-sha256 = "{trees[t]}"\n')
    path.write_text("# generated: every platform of Julia's test/binaryplatforms.jl\n" + "\n".join(parts))
    return trees


@pytest.mark.parametrize("seed", range(4))
def test_generated_file_of_all_julia_test_platforms_each_selects_its_own(tmp_path: Path, seed: int) -> None:
    platforms = JULIA_TEST_PLATFORMS[:]
    random.Random(seed).shuffle(platforms)
    toml = tmp_path / "Runicorn.toml"
    trees = _write_variants(toml, platforms)
    assert len(trees) == len(JULIA_TEST_PLATFORMS) > 50
    for t, p in platforms:
        assert rn.artifact_hash("lib", toml, platform=p) == trees[t], t
        # (an arch outside Julia's triplet table has no triplet to parse, and a macOS
        # triplet keeps only the major os_version: darwin18.7 prints as darwin18)
        if p["arch"] != "jpu" and parse_triplet(t) == p:
            assert rn.artifact_hash("lib", toml, platform=parse_triplet(t)) == trees[t], t


def test_equal_julia_versions_select_the_greater_triplet(tmp_path: Path) -> None:
    # julia_version 1.5.0 and 1.5.1 are the same to Julia (major.minor): both match a
    # 1.5.0 host with the same loss and the greater triplet (1.5.1) wins -- so such a pair
    # cannot be in the each-selects-its-own file above.
    entries = [
        (P("x86_64", "linux", julia_version="1.5.0"), "150"),
        (P("x86_64", "linux", julia_version="1.5.1"), "151"),
    ]
    for order in (entries, entries[::-1]):
        assert _select(order, P("x86_64", "linux", julia_version="1.5.0")) == "151"


def test_bind_writes_tags_normalised_as_julia(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "lib", "1" * 64, platform={"os": "Linux", "arch": "amd64", "libgfortran_version": "5"})
    text = toml.read_text()
    assert 'libgfortran_version = "5.0.0"' in text and 'libc = "glibc"' in text and 'arch = "x86_64"' in text
    # "5" and "5.0.0" are the same platform
    with pytest.raises(ArtifactError, match="already bound for platform x86_64-linux-gnu-libgfortran5"):
        rn.bind_artifact(toml, "lib", "2" * 64, platform=parse_platform("x86_64-linux-gnu-libgfortran5"))
    rn.bind_artifact(toml, "lib", "3" * 64, platform=parse_platform("x86_64-linux-gnu-libgfortran3"))
    assert rn.artifact_hash("lib", toml, platform=parse_platform("x86_64-linux-gnu")) == "1" * 64
    rn.unbind_artifact(toml, "lib", platform={"os": "linux", "arch": "x86_64", "libgfortran_version": "5.0"})
    assert rn.artifact_hash("lib", toml, platform=parse_platform("x86_64-linux-gnu")) == "3" * 64
    # A hand-written variant with a version not normalised still matches
    toml.write_text(f'[[x]]\nos = "linux"\narch = "x86_64"\nlibgfortran_version = "5"\ntree-sha256 = "{"4" * 64}"\n')
    assert rn.artifact_hash("x", toml, platform=parse_platform("x86_64-linux-gnu-libgfortran5")) == "4" * 64


def test_a_variant_tag_julia_refuses_is_reported(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    toml.write_text(f'[[x]]\nos = "linux"\narch = "x86_64"\ncuda = "12-2"\ntree-sha256 = "{"4" * 64}"\n')
    with pytest.raises(
        TomlFormatError, match=r"artifact 'x' variant 1: platform tag 'cuda' = '12-2': '-' is not allowed"
    ):
        rn.artifact_hash("x", toml)


def test_cli_platform_accepts_a_triplet(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    toml.write_text(
        textwrap.dedent(f"""
        [[lib]]
        os = "linux"
        arch = "aarch64"
        libgfortran_version = "4.0.0"
        tree-sha256 = "{"1" * 64}"
        [[lib]]
        os = "linux"
        arch = "aarch64"
        libgfortran_version = "5.0.0"
        tree-sha256 = "{"2" * 64}"
    """)
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runicorn", *args], capture_output=True, text=True, cwd=tmp_path)

    import json
    import os

    from runicorn.store import Store

    with Store(Path(os.environ["RUNICORN_DIR"])):
        pass
    r = run("status", "--platform", "aarch64-linux-gnu", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["artifacts"][0]["tree"] == "2" * 64
    r = run("status", "--platform", "aarch64-linux-gnu-libgfortran4", "--json")
    assert json.loads(r.stdout)["artifacts"][0]["tree"] == "1" * 64
    r = run("status", "--platform", "os=linux,arch=arm64,libgfortran_version=4", "--json")
    assert json.loads(r.stdout)["artifacts"][0]["tree"] == "1" * 64
    r = run("status", "--platform", "aarch64-linux-gnux")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "'aarch64-linux-gnux' is neither a triplet" in r.stderr and len(r.stderr.strip().splitlines()) == 1

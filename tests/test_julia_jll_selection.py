"""A real JLL ``Artifacts.toml``: the variant Runicorn selects is the one Julia's ``select_platform`` selects.

The file below is ``Artifacts.toml`` of the public package Ipopt_jll
(github.com/JuliaBinaryWrappers/Ipopt_jll.jl, commit ce06a4f2ecf02d5160af26fc081f9722e1bd6816,
Ipopt v300.1400.1700+0), copied verbatim: 85 variants over libgfortran 3/4/5 and the
cxx03/cxx11 string ABIs.  The rules applied (Base.BinaryPlatforms.select_platform, julia
commit 03e4c1155dcbe9ad9a7514c211f67dd6fc133d9f): keep the variants that match the host
(a tag on both sides must agree), prefer the fewest tag names differing between host and
variant, then the greatest triplet.
"""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.artifacts.platform import parse_platform, parse_triplet, select_variant

IPOPT_JLL_ARTIFACTS_TOML = r"""
[[Ipopt]]
arch = "aarch64"
git-tree-sha1 = "847f0aae4b4b7851248d669268a9aa2ba02499e5"
libgfortran_version = "5.0.0"
os = "macos"

    [[Ipopt.download]]
    sha256 = "afa6f8a613133a851f40a204a3233d2a1900e524a083f26780447a8ff85bf4c2"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-apple-darwin-libgfortran5.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "ad7782dde430ff11eddae5d3bef0d559b8678b4d"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "2d53d9d12648be1a96062df0c1207a1bbb9cb283725d38bacf921d16cd9755ae"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-gnu-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "838611e9c8d587f1c1a7cf3a34c939bb926f1467"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "dd217445ef4ad07bffe6e1c0f01b63c1f937f17bb5e409c73e565cab18c24342"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-gnu-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "96523c0d83e23cb52c96f3b6114f9b8f950d2214"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "cded1479c62a79c16ef8762b6d084e46bb322214fa26a974a9d1ff0ec1c4b41a"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-gnu-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "e662743d395722725ae86cd7ca692e7f9aabff92"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "67f1f3e0f3eae08b9c470234a3cb9b401dc10177d613889d811cb7c0c9dbffd5"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-gnu-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "e615396a31dfc0eaed19544a6b7b90d15ccde897"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "3a2ec4581e47dd2a95d417702cf6b8168ee2c129764cfedc5f56eb7941b29ef1"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-gnu-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "8b0324bdd25d7896bdd1a04c618e90561946f37e"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "844a3cd43fbc4f903b038c2f50e91efe3842a51a2b71cefc255fa1578f3eb507"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-gnu-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "e0196f43348b93fd54cbae115b9ada22a78e0aee"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "9c734776f0872210212275211bb1a16cd62f947308f392c980a6b9a1353b28e8"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-musl-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "51c6704aaea6518b2a89c3e22bc8f599086ee090"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "14e45752dcc21c16f558692f307a820a501d89edbb250a6620e8296bde5cdb0e"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-musl-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "db2108f24b07913ee174f0725bb323e818b84336"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "29fcf483b5c4a74dcd49bd1211d5807f6598ba179c340ee90058785b24b9d4df"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-musl-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "754ec7eb876811b40d3bbfe925e38b20f88904d7"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "20cd2b51f0da56a316519d722434d33b397023b5a84ac65913c75756a699ed15"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-musl-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "8d4daba48049b8af7e44962efda54145611561b0"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "12a27a144873fd235e4c8a89c5a5c46e1203e05816ffc696b98cc473a7aa1444"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-musl-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "aarch64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "4dfe0642c4eee4ff908f042b8d3cdbbeed9b553b"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "9adafaf450652309a981b1f5e4384c152c4a4dbba3cc307330de68aef31c04df"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.aarch64-linux-musl-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "41a49c5705701248634585d7f2c658536abe1c6b"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "11036bdb34b38c6dbcc8d92eac3515fb2dcd81ce25d735a6818a81dcadd3516b"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-gnueabihf-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "5ad0e7e76aa4537d741bd0fda696c57b31413213"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "e3317af7ab32de67ae3d1936b62d2307d3c37b997985cb40513bec43fe23c222"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-gnueabihf-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "e67715944d8a49cbee27ae1a1c340e2c29b77c17"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "102d40a54532fe224cabe13bbaf436c7c45b280392209be4a672b0b88aa81f69"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-gnueabihf-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "3cde8b250377aa405c7d073c923d6e5e3fc67fe1"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "86911eadbee0c0bd21c8fa13952ccb7b3fdc672459e6674e329a740a7a606faa"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-gnueabihf-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "26053c73e51ee57be4818479e577201c86c41472"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "ed9e522010cd196f1c421331a62891cd473be6094ec8006ebe3dd635a9fee3e7"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-gnueabihf-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "52989975cbd6f85d980d3994cfe6084b5b4cab6e"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "f4dabaf656aff075060647bb2841481bd80a35e96f3485b76c7037213c7d8837"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-gnueabihf-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "d2fb8c4c50eb3e8551362372944494215f44a4d5"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "673ca5bca0219841ec340f1ddb02a30ba2e47e2f869ba928e27637a725a5eedb"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-musleabihf-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "ebd9a0cad360acfa5327b157f7224d3377bf17cf"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "7b4067a1b82626f77d24b7cd6dac9aa732359fa05de5be03295f567771032c8f"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-musleabihf-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "8554c0a3ae4b921666170826b45f5edb8ce3a498"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "120c9711e9884af6ac8751c5d1c7ef55b1450a6bea51e7362663a686018f66b2"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-musleabihf-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "0c96c1780c9ef1a10bd713cb2e6958be723d7fdd"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "0d92ff5fc79492e2682efca8e36f7aaa5f597341c1f63277a03ff00843a12da0"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-musleabihf-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "b775b6194bc069465cb728218543eee4e51ee4e2"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "041fb303611032224e62e38e0b77dcc4b663ebe362861d0d13e5e7d49298b872"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-musleabihf-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "armv6l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "ea7111c46ff452b572ac152adc11977b69a0e98c"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "71f3b0c2d27925b26a9d5ae4763f67dd1edd050250721e69d2916d74ca92ce3f"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv6l-linux-musleabihf-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "f6558f093eaa156a70f9e36d29ba15b2a803b299"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "a03d0ef616ccc905bfb9e7a18162ce8e5ae4d68e53b47a4763b240bb43f0c24a"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-gnueabihf-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "b81661606bc7c49f0dd239a8ff9a31adbf7fa6e8"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "1fdc9d6a03981aef3f73c4dcc63df7019fb91e3323b0d9aaf3f30272eb411076"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-gnueabihf-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "546722c89c6e4697bcc088806d51c2a42e9b4747"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "a513b2d373ec34dc558896925609e50d0e9165b17e2125a4dd69272ea316f7b7"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-gnueabihf-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "6918def4eedb8bafbff24ce109623c6e75800fb9"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "ffb0de9599d0f1cdd3d280171d416db1d9cbad8253ac5aa57897cbc06ad043aa"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-gnueabihf-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "518c5cd2277928a9c2f488ddabc3fad6d377c7ad"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "4e2f41144e182f827a85112557acebbdedbaefcc340908e8ef478f92b5efa43a"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-gnueabihf-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "c62edc950344de60e6b9b13df6e36bc22b013b01"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "67cf989933c003ddc490b53835a65825e67f0c2ad928115960dedb7e1c80243b"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-gnueabihf-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "37255f8e2b490dad281fbee7b26aaf5a90449390"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "69f85ebebd87b8f4fdfe9163a7ad689446c5e970e5b2f33a8cf07ccac10b6048"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-musleabihf-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "dd5a102954ecae18def5ce74812bd6440e412f11"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "f95b4e5937f150eb33f0009dc75b11d423aa7560c517e946e9d6318f1d1da805"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-musleabihf-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "5e5f252489b04ae98ba7efc63dc67627302ca3bf"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "4bb5b022c917d7552a8df00126ee8d549c832ac7e3809a45d5f1294062ec6820"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-musleabihf-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "0f4c8629bdd6c31af55121bccdb31bd8e55f62c8"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "9f2af983f659e2b1e4af0d992de71c7efe2e51cb1e2f4f2d2414488434d48495"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-musleabihf-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx03"
git-tree-sha1 = "4720e7920c4d621d3c894e09decf21b5dda4c725"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "702d7b4fb883efd512c1d0292ac10687ea159ff68337a82640c85993770e582c"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-musleabihf-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "armv7l"
call_abi = "eabihf"
cxxstring_abi = "cxx11"
git-tree-sha1 = "59d94da749b0defce295647bb54c4d6e3b7020ec"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "71aeb4400b8b00ec6792508574a31bf6f3eb0661f88e21ace674827644fc2663"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.armv7l-linux-musleabihf-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "be23c891ef5720d721f0343d86087b0f74f3fce3"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "9d8e04488f584359e2644b4d0e557108431bd1ad41f1cb10105c2f4fa3230394"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-gnu-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "a18a49c5b7e9fc3dd3ad06cf889885aae24cdb6f"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "bd9a89ad5a68831c96bb6d9b27f63b4a7a6ba4499bd2ae6b0532def0579ef00b"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-gnu-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "e649081f21ec9bc7ecec9e5d471efcab61a4edec"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "3538fa18d287332b3e5aa77a445964609e14f2d2282e03fbd3fc130fae55c761"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-gnu-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "8164dd824392cde1dd8754b140aa397bcf226ac4"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "d75c8974d843a46143d02d691b0ec57611bdce6398fc7b364f14fbec8981892b"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-gnu-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "79a3c035635aef3760de1090e3685481f4c1c93b"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "0f924d26d743d575aeb1d945e2354042383204e37531252981d283e84442f98f"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-gnu-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "4b0f2adc4b26fa0722c5e140cff5746659be627d"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "112929d274e9871dd31beb08d0499d8119809ae74c1ea3a37ddd2e32ec5cf3b8"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-gnu-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "6ef730324d9a6f5bbf7bdb290096802ede71aacc"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "798707059e5d2162fd8851f7c2103995886bd0efeed100d86a9eab1ff8c99054"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-musl-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "5ac0f8ffd72e856bfeaf5c158a8ea31296fc22f2"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "789237d58aad0ffc36612afdef5d8c70e7e4019d48c0fe8c82b6040b6caea40a"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-musl-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "d5c7b6eb600e684449434be66c775d9051a5b49b"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "87fc32cc87112cd9eff7795f1bdf508e67d3226a17cba20d44c977b75a76be43"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-musl-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "8e308c3a9d5b4ca56f6e7a468d986dca3569356f"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "9a994ee65f1240ad061899ce393cf01e09206fcd0baae6e5467a5c7667ebbdc1"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-musl-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "29de7f4c884aa39c0ec069045117ab2c34493495"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "39581fc156a7b426da6e808bc57838f73f5d80b5187015fcb83eeabaeeebd582"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-musl-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "0579ae483aa3f7ae120d6972e439846391f49843"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "0e4225d22e86a104420503929c7388fa5f6d7bfdb4e61a8108d0e24490e6d6f2"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-linux-musl-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "c416a794c2eff6de3a7edd6284551c1bb8cd4fd0"
libgfortran_version = "3.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "e9e077274333540e3cb990d9cb934dd3821fea0cc47ce13fc50c2763ac6c05d2"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-w64-mingw32-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "fee0a13b9c485f69b5cce3a191d79bafffa9b138"
libgfortran_version = "3.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "5fed8070c7b76ce31c18a1bda8851a46bb1cb35df620bbe63fa8eabfcb5dc10f"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-w64-mingw32-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "03a7c0fe0411157ea804ddd372f36134475bb616"
libgfortran_version = "4.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "2554d467678dcec51c579b8beeeecc00d6904881228f5d1032e35824024deb6e"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-w64-mingw32-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "604b870da378e69553ec2fe986f3a48aced53499"
libgfortran_version = "4.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "ecde33709be02fe7e5566620147e78d677d5b7827add69115e8237f450ece390"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-w64-mingw32-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx03"
git-tree-sha1 = "7d0b2b47ca464b62e3836c32671fde301e41cb97"
libgfortran_version = "5.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "b3b5bfc857dbdb13856999efee271fd7a239df47d4b34e82ac7877d9ade3cda4"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-w64-mingw32-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "i686"
cxxstring_abi = "cxx11"
git-tree-sha1 = "00e2ea19b1814194175e869a0c6448415d413bf1"
libgfortran_version = "5.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "de020aa7d6f68acbbd88f54e1fa731ea5b3a6adde8173f78fe36b2dda379b41a"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.i686-w64-mingw32-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "powerpc64le"
cxxstring_abi = "cxx03"
git-tree-sha1 = "5fd4fa3a631162206b36d7494d48b9cb90e2716a"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "d85f3a47b96e178eb59a8100cf6f759144f1d38a6f6b14a53b2415ed5af510c9"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.powerpc64le-linux-gnu-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "powerpc64le"
cxxstring_abi = "cxx11"
git-tree-sha1 = "f9d431c2bb7930054decb2ee99f720e912b93884"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "08d61bda4772612442609f8d2a5a5b160eb7112f90daea905123729f12db613e"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.powerpc64le-linux-gnu-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "powerpc64le"
cxxstring_abi = "cxx03"
git-tree-sha1 = "d088f1ce83e8a192def5e4ea58dc4ad4feaf2505"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "a807d81210799deebd297c434cdb35d6e90bed1c0457439c99bbfa737252bc15"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.powerpc64le-linux-gnu-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "powerpc64le"
cxxstring_abi = "cxx11"
git-tree-sha1 = "d98413824709cb32439880f71cb0a20e425fba86"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "02f6011573b054c1b90313cee01a487708221f59da250731d6160e5abb862fcd"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.powerpc64le-linux-gnu-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "powerpc64le"
cxxstring_abi = "cxx03"
git-tree-sha1 = "0471dcff0a370f87ceb61f1fdeb16670dc00b46a"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "a1609450fb0bb5cc7db31fd7de3b5f7bc7314e4354a45aef9098ec31712a2374"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.powerpc64le-linux-gnu-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "powerpc64le"
cxxstring_abi = "cxx11"
git-tree-sha1 = "fce717ddda134e0b03d471662e60a73c61339223"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "530feb78bd1088256f3d1f9937d2ac6b6b949646f0953d96b4d210fb29cfd30b"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.powerpc64le-linux-gnu-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
git-tree-sha1 = "91559a075a45f9ecf4e3d2d60385238260204fd6"
libgfortran_version = "3.0.0"
os = "macos"

    [[Ipopt.download]]
    sha256 = "fb1d082666f35154fb6aa86612df8f658dbcf91e9155498905ccc767bd1e9d99"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-apple-darwin-libgfortran3.tar.gz"
[[Ipopt]]
arch = "x86_64"
git-tree-sha1 = "91559a075a45f9ecf4e3d2d60385238260204fd6"
libgfortran_version = "4.0.0"
os = "macos"

    [[Ipopt.download]]
    sha256 = "fb1d082666f35154fb6aa86612df8f658dbcf91e9155498905ccc767bd1e9d99"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-apple-darwin-libgfortran4.tar.gz"
[[Ipopt]]
arch = "x86_64"
git-tree-sha1 = "91559a075a45f9ecf4e3d2d60385238260204fd6"
libgfortran_version = "5.0.0"
os = "macos"

    [[Ipopt.download]]
    sha256 = "fb1d082666f35154fb6aa86612df8f658dbcf91e9155498905ccc767bd1e9d99"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-apple-darwin-libgfortran5.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "a164ff4b62115141f7147a7c5b7061349b36341f"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "0801350d41db8733393519d9d644a49b27f5500fcd00c3679c01d581e55d6f46"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-gnu-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "8370149c84fa6049e384ecde3d189164eb268af2"
libc = "glibc"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "264f7871e0c8d7ed3ab2bcac3381809e9e64180e7cf383342115110d842023dd"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-gnu-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "44b077e48270b6804eefdbbe6fbceffe71b71e62"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "83da13e7f0eafa5fd92bb33c56e300b05707f175a692d4abdc274990ced50b76"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-gnu-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "5e01d8f5a3b0c27a6f77fc67c1d9586bb674f77e"
libc = "glibc"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "e76780d0e2c19211c7969a5a7247aba8afb745629c617425ca9d89e1b1ac483d"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-gnu-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "cf3b2cf2e94fe0a777cebc724f9c18de0af7346c"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "a4873d768767c4b5fc563130ca62dc938c312a0773dc3262a2770202494386b5"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-gnu-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "2c98f3c38f759268b55257486086109fe5eccbf0"
libc = "glibc"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "9b9a9731fe6905e36aa6d5b58bae0c77dd92ba788b027a2c83ad0f801cb4ab18"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-gnu-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "4abe027c7b888d757c38bf951d0282588ffdf01b"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "385e8adc97b1a4cad063f06985450367b1772424ea3ea984fab951f9df7eb417"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-musl-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "935381119f143029caf4b906ab6b7270a99f5d68"
libc = "musl"
libgfortran_version = "3.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "1ff6881b87d1805af857894598e8e104520f8a5297997411a999576a494cc1ac"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-musl-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "b54bea91199825bc4e7ae024fb5033828017b005"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "400680f4ad7e44976ceee9ba83c31334a15e921fd3b76847188fc7a8f0ad122e"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-musl-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "89864e82463f45a10bcfb14e7ffcf2c1a9c4ead1"
libc = "musl"
libgfortran_version = "4.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "6e13b129988a8bd0429002cb4e6e00e259de4fcea400e2619d8ed672d770ae59"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-musl-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "69c2cf0248dfdb4cd825ff5a600e98cc0d57d5fd"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "951560cdeff9108ffd8ed945f1d69734abc4c2e859ef8e61d09184de881c396d"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-musl-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "8260023e5f13202431bc8d3e39cc8e3c9f48952f"
libc = "musl"
libgfortran_version = "5.0.0"
os = "linux"

    [[Ipopt.download]]
    sha256 = "3757f1b9c60c65351c7b35622689fafdebf0c84c95689f48ada838e41dbb7536"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-linux-musl-libgfortran5-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
git-tree-sha1 = "11ea606507b547804d25d08ec4d426706129f733"
libgfortran_version = "3.0.0"
os = "freebsd"

    [[Ipopt.download]]
    sha256 = "afb2bc4dc111b7620c5003a437b6859992ce26692c7ac75f2c41792a2eb03037"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-unknown-freebsd-libgfortran3.tar.gz"
[[Ipopt]]
arch = "x86_64"
git-tree-sha1 = "2a526c05cd001eb1e85e41aec95858eac4dfe503"
libgfortran_version = "4.0.0"
os = "freebsd"

    [[Ipopt.download]]
    sha256 = "c9324e8b4ed4fd05964de06c9fb41e5302529227455c4a6f44d80a5d14cb6b0c"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-unknown-freebsd-libgfortran4.tar.gz"
[[Ipopt]]
arch = "x86_64"
git-tree-sha1 = "7236773a2d22ffd4256503f7658ff1c6561ab832"
libgfortran_version = "5.0.0"
os = "freebsd"

    [[Ipopt.download]]
    sha256 = "46cec24c231c508e82cbcfd2719fcc57387ae56c5b3e2cb50d170732035dab58"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-unknown-freebsd-libgfortran5.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "5dc2e9f951b351247d274230f0c8dce122d69447"
libgfortran_version = "3.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "92c0929b13592a6eae95cc735bff4969f6a7b453d8faa5d1103b01a6fbd8bf0c"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-w64-mingw32-libgfortran3-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "be5e9634aaedd2b3a9c84cd17a829b289cf16ae8"
libgfortran_version = "3.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "737dafd0eac930e97f9ce14ac85cd47a7fdbe28d0152f06a4e4dfbe4b824c813"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-w64-mingw32-libgfortran3-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "05b2531fd6559273a211d845df1bb2530278ea2b"
libgfortran_version = "4.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "f53deccdd02195d0ce112bbd4373488b6e0a8f724b309f976a7dcaf838127e95"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-w64-mingw32-libgfortran4-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "649c224a5dc1c18f356be170e8a499b0ae373ccb"
libgfortran_version = "4.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "e90788e14e5be5c2613be55cd3bca198b0fa510e622d1b2ef505530da9682eca"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-w64-mingw32-libgfortran4-cxx11.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx03"
git-tree-sha1 = "35233c39be8714dca39155c1e648050f4ea28d00"
libgfortran_version = "5.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "2b1bec0af8241342a4391823785fb57b6f2b7deaa57b2d0f0ecca7e0af260773"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-w64-mingw32-libgfortran5-cxx03.tar.gz"
[[Ipopt]]
arch = "x86_64"
cxxstring_abi = "cxx11"
git-tree-sha1 = "44674c2c779f0f44724bf9cf94cda1ebf2580fc7"
libgfortran_version = "5.0.0"
os = "windows"

    [[Ipopt.download]]
    sha256 = "3c1c823d27e7bc9365b6515996062c7d1fa3b1326ceab76cd6efa957f5bf5cd4"
    url = "https://github.com/JuliaBinaryWrappers/Ipopt_jll.jl/releases/download/Ipopt-v300.1400.1700+0/Ipopt.v300.1400.1700.x86_64-w64-mingw32-libgfortran5-cxx11.tar.gz"
"""

ENTRIES = tomllib.loads(IPOPT_JLL_ARTIFACTS_TOML)["Ipopt"]


def tree_of(suffix: str) -> str:
    """The git-tree-sha1 of the variant whose tarball is named ``Ipopt.v...<suffix>.tar.gz``."""
    hits = [e["git-tree-sha1"] for e in ENTRIES if e["download"][0]["url"].endswith(f".{suffix}.tar.gz")]
    assert len(hits) == 1, suffix
    return hits[0]


# host triplet -> the variant Julia selects, and why
CASES = [
    # A host that states no compiler ABI (what Runicorn detects): the six x86_64 glibc
    # variants all match with the same loss (2 tags the host lacks); the greatest triplet
    # wins, so libgfortran5 beats 4 and 3, cxx11 beats cxx03.  The file lists
    # libgfortran3-cxx03 first, which is what first-in-file picked before.
    ("x86_64-linux-gnu", "x86_64-linux-gnu-libgfortran5-cxx11"),
    # Julia's own host on a current Linux: an exact match (loss 0).
    ("x86_64-linux-gnu-libgfortran5-cxx11", "x86_64-linux-gnu-libgfortran5-cxx11"),
    # An old toolchain: libgfortran and the string ABI both present on both sides must agree.
    ("x86_64-linux-gnu-libgfortran4-cxx03", "x86_64-linux-gnu-libgfortran4-cxx03"),
    # Only the string ABI known: libgfortran versions tie on loss, libgfortran5 is the greatest.
    ("x86_64-linux-musl-cxx03", "x86_64-linux-musl-libgfortran5-cxx03"),
    # Apple silicon: one variant; macOS variants carry no cxxstring_abi.
    ("aarch64-apple-darwin", "aarch64-apple-darwin-libgfortran5"),
    # Intel macOS 14 with libgfortran3: os_version on the host only is a wildcard.
    ("x86_64-apple-darwin14-libgfortran3", "x86_64-apple-darwin-libgfortran3"),
    # "arm" is armv7l and a linux armv7l without call_abi is eabihf (Julia's Platform constructor).
    ("arm-linux-gnueabihf", "armv7l-linux-gnueabihf-libgfortran5-cxx11"),
    # libgfortran given in old "gcc7" spelling = libgfortran4; cxx11 > cxx03 among the two left.
    ("powerpc64le-linux-gnu-gcc7", "powerpc64le-linux-gnu-libgfortran4-cxx11"),
    ("i686-w64-mingw32", "i686-w64-mingw32-libgfortran5-cxx11"),
    # FreeBSD 13.2: the variants state no os_version, so the host's is a wildcard.
    ("amd64-unknown-freebsd13.2", "x86_64-unknown-freebsd-libgfortran5"),
]


@pytest.mark.parametrize("host,expected", CASES)
def test_real_jll_file_selects_what_julia_selects(tmp_path: Path, host: str, expected: str) -> None:
    toml = tmp_path / "Artifacts.toml"
    toml.write_text(IPOPT_JLL_ARTIFACTS_TOML)
    platform = parse_triplet(host)
    assert rn.artifact_hash("Ipopt", toml, platform=platform) == tree_of(expected)
    # the same through the CLI's and the environment's spelling of a platform: a triplet
    assert rn.artifact_hash("Ipopt", toml, platform=parse_platform(host)) == tree_of(expected)
    # whatever the order of the entries
    rng = random.Random(host)
    for _ in range(5):
        shuffled = ENTRIES[:]
        rng.shuffle(shuffled)
        i = select_variant(shuffled, platform)
        assert i is not None and shuffled[i]["git-tree-sha1"] == tree_of(expected)


def test_real_jll_file_has_no_variant_for_an_unbuilt_platform(tmp_path: Path) -> None:
    toml = tmp_path / "Artifacts.toml"
    toml.write_text(IPOPT_JLL_ARTIFACTS_TOML)
    assert rn.artifact_hash("Ipopt", toml, platform=parse_triplet("riscv64-linux-gnu")) is None
    # a host with libgfortran 5 on macOS x86_64 but asking for cxx11: macOS variants have
    # no cxxstring_abi, so the tag is a wildcard there
    assert rn.artifact_hash("Ipopt", toml, platform=parse_triplet("x86_64-apple-darwin-libgfortran5-cxx11")) == tree_of(
        "x86_64-apple-darwin-libgfortran5"
    )

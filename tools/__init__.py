"""Developer tooling (tests' and benchmarks' shared parts, benchmarks, the test script); not shipped."""

"""diffbench's harness: CLI, registries, records, suites, runner. Kept import-light on purpose."""

"""CLI commands, one module per group; each registers itself with ``bench.cli.command``."""

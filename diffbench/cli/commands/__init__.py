"""CLI commands, one module per group; each registers itself with ``diffbench.cli.app.command``."""

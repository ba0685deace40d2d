"""diffbench's bottom layer: user errors, the registry type and the records schema.

Imports nothing else of diffbench (tests/test_architecture.py enforces it), so every other
module can import it.
"""

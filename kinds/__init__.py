"""Integration kinds (runtime/kinds.py): one package each. No kind imports another (tests/test_layering.py)."""

"""Libraries registered in place (issue 16): roots, hash cache, scan, hash aliases, identification,
duplicates and the ``comfyvn-library`` CLI (docs/LIBRARY.md).

Kept free of imports so :mod:`comfyvn.store.migrations` may import :mod:`.schema` without a cycle.
"""

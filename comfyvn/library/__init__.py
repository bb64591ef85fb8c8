"""Libraries registered in place (issue 16): hash cache, and later roots, scan and identification.

Kept free of imports so :mod:`comfyvn.store.migrations` may import :mod:`.schema` without a cycle.
"""

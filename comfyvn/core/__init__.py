"""Compatibility names of the original comfyvn (``comfyvn.core.modder_hooks``)."""

"""Tornado handlers of the comfyvn server extension, one module per area."""

"""comfyvn asset workbench core library (no Jupyter, Tornado or ipywidgets imports)."""

__version__ = "0.2.0"

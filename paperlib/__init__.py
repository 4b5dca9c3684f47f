"""paperlib: the tested code behind the executable book.

- :mod:`paperlib.swap`: paper A, adjacent layer swap (indicators, linear fits, swap effects).
- :mod:`paperlib.loraild`: paper B, LoRA-based intermediate-layer distillation.
- :mod:`paperlib.data`: models and text, from the hub (paper configuration) or from registry
  packages that ship real weights and text (embedded, offline configuration).
"""

__version__ = "0.1.0"

"""lm-workbench engine: datasets, models, generation, training and the run store.

Importing this package is cheap: torch and transformers are imported only by
the modules that need them (models, generation, training), so the TUI can
paint its first frame before they load.
"""

__version__ = "0.1.0"

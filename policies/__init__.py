"""The shipped policies (YAML), installed with the package; `clipmod.bundled` finds them."""

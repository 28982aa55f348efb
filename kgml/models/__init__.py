"""Site models: the abstract interface every model kind implements (`kgml.models.base`)."""

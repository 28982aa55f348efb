"""Site models: the abstract interface every model kind implements (`base`), the neural parts (`nn`), the
hybrid process–ML model (`hybrid`), the same-size network (`neural`), their losses and constraints."""

"""shapdiff engine: computes and stores; never imports textual."""

__version__ = "0.1.0"

"""kdasr: knowledge distillation of CTC speech acoustic models."""

__version__ = "0.1.0"

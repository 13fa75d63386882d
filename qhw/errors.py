"""Exceptions raised for user mistakes; the command line turns them into one-line errors."""

__all__ = [
    "QhwError",
    "ConfigError",
    "ModelError",
    "DataError",
    "UnsupportedOpError",
    "ArithmeticContractError",
]


class QhwError(Exception):
    """Base class: a problem the user can fix (bad file, bad option, bad data)."""


class ConfigError(QhwError):
    """An option or parameter has a value outside what is supported."""


class ModelError(QhwError):
    """A model file is missing, unreadable or structurally wrong."""


class DataError(QhwError):
    """A data file (calibration, evaluation) is missing or does not fit the model."""


class UnsupportedOpError(ModelError):
    """A node uses an operator or attribute that qhw cannot handle at all."""


class ArithmeticContractError(QhwError):
    """A value falls outside the ranges the arithmetic contract (docs/arithmetic.md) defines."""

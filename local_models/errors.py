"""Errors every layer can raise. Each message says what went wrong and what fixes it."""


class ConclaveError(Exception):
    """Base of every error Conclave raises on purpose; the CLI prints these without a traceback."""


class ModelNotFound(ConclaveError):
    pass


class ModelNotInstalled(ConclaveError):
    pass


class WeightsCorrupt(ConclaveError):
    pass


class ContextOverflow(ConclaveError):
    """The prompt (plus the requested output) does not fit the model's context."""


class BackendUnavailable(ConclaveError):
    pass

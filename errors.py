"""One error base for everything leadflow raises on purpose.

Subclasses carry the facts as attributes and build their message in
``__str__``, so that a caller can both show the message and act on the facts.
"""


class LeadflowError(Exception):
    """Base of every error leadflow raises deliberately."""


class ConfigError(LeadflowError):
    """A configuration value is unknown, missing or of the wrong kind."""

    def __init__(self, key, problem, source=None):
        super().__init__(key, problem, source)
        self.key = key
        self.problem = problem
        self.source = source

    def __str__(self):
        where = f" in {self.source}" if self.source else ""
        return f"config{where}: {self.key}: {self.problem}"


class StorageError(LeadflowError):
    """The database could not store or read something."""

    def __init__(self, action, cause):
        super().__init__(action, cause)
        self.action = action
        self.cause = cause

    def __str__(self):
        return f"could not {self.action}: {self.cause}"


class NotFoundError(LeadflowError):
    """A named object does not exist."""

    def __init__(self, kind, ident):
        super().__init__(kind, ident)
        self.kind = kind
        self.ident = ident

    def __str__(self):
        return f"no {self.kind} {self.ident!r}"

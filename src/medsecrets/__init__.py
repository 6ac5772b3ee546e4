"""medsecrets: encrypted, versioned, audited secrets management for healthcare AI platforms."""

__version__ = "0.1.0"

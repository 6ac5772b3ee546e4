"""Identities and tokens (``tokens``); the full policy model comes with access control."""

from medsecrets.auth.tokens import CAPABILITIES, TokenInfo, TokenStore

__all__ = ["CAPABILITIES", "TokenInfo", "TokenStore"]

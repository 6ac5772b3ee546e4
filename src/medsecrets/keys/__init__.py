"""Per-category key-encryption keys and envelope encryption."""

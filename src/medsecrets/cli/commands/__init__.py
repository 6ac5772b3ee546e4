"""The CLI's command groups, one module each, plus the shared connection options."""

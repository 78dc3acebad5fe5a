"""Web framework integrations, one module per framework, each behind an import guard."""

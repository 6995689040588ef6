"""One module per kind: schema, defaults, validation, strategy and printer columns."""

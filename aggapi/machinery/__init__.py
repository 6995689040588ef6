"""Pure Kubernetes API machinery: selectors, patches, validators, JSONPath and time formats (no I/O)."""

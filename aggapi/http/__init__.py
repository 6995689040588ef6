"""HTTP layer: request parsing, authn/authz middleware, handlers, watch streaming, Status errors."""

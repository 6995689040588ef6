"""Authentication and authorization (a chain the aggregation issue extends with front-proxy, tokens, SAR)."""

"""Generated tunnel stubs (`make proto`); imported through edge.tunnel.protocol."""

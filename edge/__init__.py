"""aggapi-edge: the components that run on every edge node. Never imports aggapi."""

"""Registry layer: per-resource REST semantics on top of storage; kinds plug in through strategies."""

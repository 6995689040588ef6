"""A kube-apiserver stand-in for tests and the local lab, built from aggapi's own generic machinery.

It is a test double: production aggapi never imports it (an import-linter contract checks this).
See docs/devcluster.md for what it does and does not do.
"""

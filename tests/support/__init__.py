"""Helpers shared by tests: real etcd processes, throwaway TLS material."""

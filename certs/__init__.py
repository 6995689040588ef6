"""Certificates: CA, issuing, CSR signing, PEM files. Imports neither aggapi nor edge."""

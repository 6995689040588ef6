"""Storage layer: etcd access (etcd.py only), kube-apiserver storage semantics, watch cache."""

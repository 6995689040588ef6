"""shadow-apiserver: the caching proxy to kube-apiserver on every edge node."""

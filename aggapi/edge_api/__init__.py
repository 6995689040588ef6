"""The API side of the edge: the edgenodes view (Nodes joined with tunnel state), its kubelet proxy
subresource, and where kube-apiserver's egress CONNECTs go. `assemble.build_edge` puts it together for
`aggapi serve`."""

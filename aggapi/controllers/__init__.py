"""Controllers and their machinery: informers on kube-apiserver (the only aggapi package besides auth/
that uses kubernetes-asyncio), and the Node directory the tunnel and edgenodes read."""

"""Generated etcd v3 stubs (`make proto`); only aggapi.storage.etcd imports them."""

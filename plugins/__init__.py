"""multihome.plugins: the CNI plugins (one module per plugin family)."""

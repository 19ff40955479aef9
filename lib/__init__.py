"""multihome.lib: the CNI protocol core shared by every multihome plugin."""

"""multihome.ipam: IPAM plugins and their lease stores."""

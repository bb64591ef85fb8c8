"""Studio core services (the asset registry lives here, at the path the seed names)."""

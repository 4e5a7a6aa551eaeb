raise RuntimeError("plugin exploded on import")

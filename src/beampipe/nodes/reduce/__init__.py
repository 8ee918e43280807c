"""General-purpose reducers: ``sum``."""

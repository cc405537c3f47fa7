"""The FastAPI search service, a thin shell over rsir.search.engine.SearchEngine (service issue)."""

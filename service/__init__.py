"""The FastAPI search service, a thin shell over search.engine.SearchEngine (service issue)."""

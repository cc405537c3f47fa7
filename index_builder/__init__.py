"""The offline job that turns an image archive into a servable index directory (index-builder issue)."""

"""samfast's HTTP server: a FastAPI app over the Python package (samfast.server.app), and the
samfast-server command (samfast.server.cli)."""
from .app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]

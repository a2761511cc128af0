"""The ceiling for `bench/http.py`: a bare FastAPI app with one route, served by uvicorn exactly as the real app.

The route is a plain `def`, as the real app's routes are, so it pays FastAPI's threadpool hop too: what the real
app adds on top of this is its own work (middleware, dependencies, auth, the store, rendering).
"""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    """`uvicorn bench._hello_app:create_app --factory`, the same flags as `api.app:create_app`."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/hello")
    def hello() -> dict[str, bool]:
        return {"ok": True}

    return app

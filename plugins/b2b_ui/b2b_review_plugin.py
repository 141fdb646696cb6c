"""Registers the B2B review screens with Airflow 3: a FastAPI app at ``/b2b`` and a "B2B review"
entry in the navigation (an external view embedded in the Airflow UI). Restart the api-server
after changing it. Authentication: see ``b2b_ui.auth``."""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from b2b_ui.review_app import create_app


class B2BReviewPlugin(AirflowPlugin):
    name = "b2b_review"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/b2b", "name": "B2B review"}]
    external_views = [
        {"name": "B2B review", "href": "b2b/review/", "destination": "nav", "category": "browse",
         "url_route": "b2b_review"},
    ]

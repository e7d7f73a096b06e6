"""The hardened HTTP layer of the qmri app: one policy, the datastore rules, the guarded routes.

``lib.server.asgi:app`` is MONAI Label's FastAPI app with this project's route policy, CORS, body
limits and a bounded inference pool; ``make serve`` starts it with ``monailabel start_server
--uvicorn_app lib.server.asgi:app``.
"""

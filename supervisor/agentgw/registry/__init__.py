"""The read-only registry endpoint: a starlette app over cached status, served by uvicorn.

Read-only by construction: nothing here imports ``agentgw.apply`` (tests/unit/test_layers.py).
"""

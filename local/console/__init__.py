"""The local console: a read-only web page of what happened, built on the AWS APIs only.

`data.py` gathers (boto3 clients in, plain dicts out, so it can point at AWS as well), `dag.py`
turns a deployed pipeline definition into the graph the page draws, `pages.py` renders HTML,
`app.py` is the WSGI app and its server on 127.0.0.1. docs/console.md says what it shows.
"""

"""Domain logic shared by the Lambda handlers (deployed as the project's Lambda layer).

Handlers in ``functions/<name>/app.py`` stay thin: they read the event and call into this
package. Every function here takes its AWS clients as arguments (default: a plain ``boto3`` client),
so tests pass clients bound to a moto server and the code never knows where it runs.
"""

"""The web dashboard under /ui, and the API docs served offline (/docs).

Server-rendered pages (Jinja2 templates, htmx for the parts that refresh) whose routes
read through the same store functions and route functions as the JSON API, with the same
keys and tenants; the charts draw what the JSON API's own functions answer (a job's
metrics, its event stream). Every front-end file is vendored under static/vendor/.
"""

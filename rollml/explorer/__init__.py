"""The block explorer of a rollml deployment (`rollml explorer`): a read model of the chain
(`index.py`) and a web app serving a plain HTML/JS page over it (`app.py`, `static/`)."""

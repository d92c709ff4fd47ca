from rollml.cli import app

app(prog_name="rollml")

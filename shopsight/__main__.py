from shopsight.cli import app

app(prog_name="shopsight")

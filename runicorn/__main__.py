from runicorn.cli import run

# One program name however it is started, so messages and shell completion
# ($_RUNICORN_COMPLETE) are the same for `python -m runicorn` and `runicorn`.
run(prog_name="runicorn")

from runicorn.cli import main

# One program name however it is started, so messages and shell completion
# ($_RUNICORN_COMPLETE) are the same for `python -m runicorn` and `runicorn`.
main(prog_name="runicorn")

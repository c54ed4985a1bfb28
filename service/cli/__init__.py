"""The `counterweight` command: `main` is its entry point (service.cli.main)."""

# The exit code of a command ended by Ctrl-C, the shell's own for it (128 + SIGINT).
INTERRUPTED = 130

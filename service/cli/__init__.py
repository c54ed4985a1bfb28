"""The `counterweight` command: `main` is its entry point (service.cli.main)."""
